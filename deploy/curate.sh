#!/usr/bin/env bash
# `refinery curate` on a cluster runner. Edit the settings (or set them in the environment), then:
#
#   deploy/curate.sh dataflow 'gs://B/warc/*.warc.gz' gs://B/curated [more refinery curate options]
#   deploy/curate.sh flink    'gs://B/warc/*.warc.gz' gs://B/curated
#   deploy/curate.sh spark    's3://B/warc/*.warc.gz' s3://B/curated
#   deploy/curate.sh dataproc 'gs://B/warc/*.warc.gz' gs://B/curated   # writes curate.jar, see docs/deploy.md
#
# The job is launched from the worker image (deploy/Dockerfile), so every path the launcher resolves exists on
# the workers too; LOCAL=1 launches with the `refinery` on PATH instead. Flag sets: docs/deploy.md.
set -euo pipefail

PROJECT=${PROJECT:-my-project}                      # Dataflow, Dataproc
REGION=${REGION:-europe-west1}
BUCKET=${BUCKET:-gs://my-bucket}                    # temp and staging files
IMAGE=${IMAGE:-$REGION-docker.pkg.dev/$PROJECT/refinery/worker:0.1.0}
MACHINE_TYPE=${MACHINE_TYPE:-n2-standard-4}         # Dataflow: 4 vCPUs, 16 GB per worker
MAX_WORKERS=${MAX_WORKERS:-50}                      # Dataflow autoscaling ceiling
FLINK_MASTER=${FLINK_MASTER:-flink-jobmanager:8081} # Flink's REST address
PARALLELISM=${PARALLELISM:-16}                      # Flink task slots to use
SPARK_REST_URL=${SPARK_REST_URL:-http://spark-master:6066}   # Spark standalone master's REST endpoint

usage="usage: deploy/curate.sh dataflow|flink|spark|dataproc INPUT OUTPUT [refinery curate options]"
runner=${1:?$usage}
input=${2:?$usage}
output=${3:?$usage}
shift 3

case $runner in
  dataflow)
    beam=(--runner=DataflowRunner --project="$PROJECT" --region="$REGION"
          --temp_location="$BUCKET/tmp" --staging_location="$BUCKET/staging"
          --sdk_container_image="$IMAGE"
          --machine_type="$MACHINE_TYPE" --autoscaling_algorithm=THROUGHPUT_BASED --max_num_workers="$MAX_WORKERS"
          --job_name="refinery-curate-$(date +%Y%m%d-%H%M%S)") ;;
  flink)
    beam=(--runner=FlinkRunner --flink_master="$FLINK_MASTER" --flink_submit_uber_jar --parallelism="$PARALLELISM"
          --environment_type=DOCKER --environment_config="$IMAGE") ;;
  spark)
    beam=(--runner=SparkRunner --spark_submit_uber_jar --spark_rest_url="$SPARK_REST_URL"
          --environment_type=DOCKER --environment_config="$IMAGE") ;;
  dataproc)     # then: gcloud dataproc jobs submit spark ... --jars=curate.jar (docs/deploy.md)
    beam=(--runner=SparkRunner --output_executable_path=curate.jar
          --environment_type=DOCKER --environment_config="$IMAGE") ;;
  *)
    echo "$usage" >&2
    exit 2 ;;
esac

if [[ ${LOCAL:-0} == 1 ]]; then
  launch=(refinery)
else             # gcloud's application-default credentials for gs://; the host network for the cluster's REST port
  launch=(docker run --rm --network=host -v "$HOME/.config/gcloud:/root/.config/gcloud:ro" -v "$PWD:/work" -w /work
          --entrypoint refinery "$IMAGE")
fi
exec "${launch[@]}" curate --input "$input" --output "$output" --no-progress "${beam[@]}" "$@"
