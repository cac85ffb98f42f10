#!/usr/bin/env bash
# `refinery train` under torchrun (DDP: NCCL on GPUs, gloo on CPU; training/loop.py reads torchrun's variables).
# The arguments are `refinery train`'s:
#
#   deploy/torchrun.sh --config configs/train-sample.yaml                 # this node, one process per GPU
#   NPROC_PER_NODE=2 deploy/torchrun.sh --config CONFIG --set run.steps=100
#   NNODES=4 RDZV_ENDPOINT=node0:29500 deploy/torchrun.sh --config CONFIG # the same line on each of 4 nodes
#   deploy/torchrun.sh --resume out/train                                 # continue from the latest checkpoint
#
# NPROC_PER_NODE: processes per node (default: the GPUs nvidia-smi lists, else 1). RDZV_ENDPOINT: HOST:PORT on
# one of the nodes for the c10d rendezvous; without it, one node (--standalone). RDZV_ID names the run, so
# nodes of another run at the same endpoint do not join it. PYTHON: the interpreter (e.g. .venv/bin/python).
set -euo pipefail

(( $# > 0 )) || { echo "usage: deploy/torchrun.sh --config CONFIG | --resume RUN_DIR [--set KEY=VALUE ...]" >&2; exit 2; }
nproc=${NPROC_PER_NODE:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l || true)}
(( nproc > 0 )) || nproc=1

if [[ -n ${RDZV_ENDPOINT:-} ]]; then
  rendezvous=(--nnodes="${NNODES:-1}" --rdzv_backend=c10d --rdzv_endpoint="$RDZV_ENDPOINT"
              --rdzv_id="${RDZV_ID:-refinery-train}")
else
  rendezvous=(--standalone)
fi
# torch.distributed.run is torchrun; through the interpreter it also works from a venv that is not activated
exec "${PYTHON:-python3}" -m torch.distributed.run "${rendezvous[@]}" --nproc_per_node="$nproc" \
  -m pipeline.app.cli train "$@"
