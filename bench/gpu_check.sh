#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go: the training loop's CUDA path (bf16 autocast, torch.compile, fused
# AdamW, MFU in the log, a checkpoint resumed), against the same run in float32 uncompiled; throughput / MFU of
# bench_model.py at GPT-2 small's shape (91 M parameters with its 8,000-token vocabulary); eval, SFT, reward, DPO
# and PPO on the GPU; the loop under torchrun (NCCL). Results: docs/BENCHMARKS.md.
#
#   REFINERY_SHARED_DATA=../shared/data bash bench/gpu_check.sh out/run /tmp/gpu-check
#
# RUN: the folder `make run` wrote (its tokens/ are used); OUT: one log per check, and summary.txt.
# Each check has its own time limit and the script goes on past a failed one. SCALE=0.02 runs every check with
# 2 % of the steps (a dry run of the script on a CPU); CHECKS="train-bf16 sft" runs only those (the names below).
set -uo pipefail
RUN=${1:?usage: gpu_check.sh RUN_DIR OUT_DIR}
OUT=${2:?usage: gpu_check.sh RUN_DIR OUT_DIR}
SCALE=${SCALE:-1}
PY=${PYTHON:-python3}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
WORK=$(mktemp -d)
cat > "$WORK/refinery.py" <<END
import sys
sys.path.insert(0, "$REPO")
from pipeline.app.cli import main
sys.exit(main(sys.argv[1:]))
END
REFINERY=("$PY" "$WORK/refinery.py")
steps() { $PY -c "import sys; print(max(2, round(int(sys.argv[1]) * float(sys.argv[2]))))" "$1" "$SCALE"; }

check() {     # check NAME SECONDS COMMAND...: the command's output in OUT/NAME.log, its exit and time in summary.txt
    local name=$1 limit=$2 start rc
    shift 2
    case " ${CHECKS:-$name} " in *" $name "*) ;; *) return ;; esac
    start=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc in $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
    tail -n 6 "$OUT/$name.log" | sed 's/^/    /'
}

{ nvidia-smi -L 2>&1; $PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"; } | tee "$OUT/summary.txt"

T=$(steps 250)
HALF=$(( T / 2 ))
TRAIN=(--config "$REPO/configs/train-sample.yaml" --set "data.tokens=$RUN/tokens" --set run.progress=false
       --set "run.steps=$T" --set run.log_every=25 --set "run.eval_every=$HALF" --set "run.checkpoint_every=$HALF")
# the sample config as `make run` trains it, on the GPU's defaults (bf16 autocast, compiled), stopped half way
# and resumed; then the same steps in float32, uncompiled, for the losses to compare
check train-bf16 150 "${REFINERY[@]}" train "${TRAIN[@]}" --set "run.out_dir=$WORK/train" --set "run.stop_at_step=$HALF"
check train-bf16-resume 120 "${REFINERY[@]}" train --resume "$WORK/train"
cp "$WORK/train/log.jsonl" "$OUT/train-bf16.jsonl" 2>/dev/null
check train-fp32 90 "${REFINERY[@]}" train "${TRAIN[@]}" --set "run.out_dir=$WORK/train32" --set run.dtype=float32 \
    --set run.compile=false
cp "$WORK/train32/log.jsonl" "$OUT/train-fp32.jsonl" 2>/dev/null
if [ "$SCALE" = 1 ]; then
    check bench-124m 180 "$PY" "$REPO/bench/bench_model.py" --device cuda --dim 768 --layers 12 --heads 12 \
        --kv-heads 12 --seq 1024 --batch 16 --compile
fi
check eval 90 "${REFINERY[@]}" eval --model "$WORK/train" --tasks wikitext,arc_easy,hellaswag,piqa --limit 200 \
    --no-progress --output "$OUT/eval.json"
check eval-bf16 60 "${REFINERY[@]}" eval --model "$WORK/train" --tasks arc_easy,hellaswag,piqa --limit 200 \
    --dtype bfloat16 --no-progress --output "$OUT/eval-bf16.json"
POST=(--set "run.steps=$(steps "${POST_STEPS:-100}")" --set run.progress=false --set run.eval_every=0)
ALPACA="${REFINERY_SHARED_DATA:-../shared/data}/sft/alpaca_data_1k.json"
check sft 90 "${REFINERY[@]}" sft --model "$WORK/train" --data "$ALPACA" --output "$WORK/sft" "${POST[@]}"
check reward 90 "${REFINERY[@]}" reward --model "$WORK/sft" --output "$WORK/reward" "${POST[@]}"
check dpo 90 "${REFINERY[@]}" dpo --model "$WORK/sft" --output "$WORK/dpo" "${POST[@]}"
check ppo 120 "${REFINERY[@]}" ppo --model "$WORK/sft" --reward-model "$WORK/reward" --output "$WORK/ppo" \
    --set "ppo.iterations=$(steps 10)" --set run.progress=false
# the same loop under torchrun: one rank, NCCL, DistributedDataParallel
check train-ddp 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 "$WORK/refinery.py" train \
    "${TRAIN[@]}" --set "run.out_dir=$WORK/train-ddp" --set "run.steps=$(( T / 5 ))"
rm -rf "$WORK"
