#!/usr/bin/env bash
# Issue 8 on the GPU machine in as few device calls as possible (a task is lent 15 minutes of device time, 10 per
# call): every octomega variant of bench/NOTES.md side by side with transformers, each in its own process.
#
# Here, once (the device image lacks Megatron-Core; its wheel holds compiled dataset helpers, so download the
# manylinux build; .whl/ is in .gitignore and travels only when `carry` names it):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 -d .whl megatron-core==0.19.2
# Then the device call (carry [".whl"], timeout_s 600), PHASE = 1b (~7 min) or 3b (~5 min):
#   bash bench/device_train_throughput.sh 1b
# Results land in $OUT (the device tool brings them back): the bench's JSON and the console log per phase, and
# gpu.txt. Copy the JSONs into bench/results/ and the numbers into bench/NOTES.md, with this command.
# Shorter than the defaults (2 warm-up + 6 timed steps, not 3 + 10) to fit a phase in one call; --profile adds one
# untimed profiled step per run (kernel time by kind).
set -uo pipefail
phase=${1:?give the phase: 1b or 3b}
cd "$(dirname "$0")/.." || exit 2
out=${OUT:-bench/results/device}
mkdir -p "$out"
if ! python3 -c "import megatron.core" 2>/dev/null; then
  ls .whl/megatron_core-*.whl >/dev/null 2>&1 || { echo "no .whl/megatron_core-*.whl: see the header" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 2
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
bench=(python3 bench/train_throughput.py --warmup 2 --steps 6 --profile --timeout-s 240)
case "$phase" in
  1b)  # the baseline (local spec + SDPA, Megatron's cross entropy), each change alone, the two together
    "${bench[@]}" --shape 1b \
      --octomega-set model.cross_entropy=chunked \
      --octomega-set model.cross_entropy=native \
      --octomega-set model.compile=layers \
      --octomega-set model.compile=layers,model.cross_entropy=chunked \
      --out "$out/train_throughput_1b.json" 2>&1 | tee "$out/train_throughput_1b.log" ;;
  3b)  # does the 3B fit one GPU without recompute (prediction: yes, ~67 GiB + logits), and with the chunked loss
    "${bench[@]}" --shape 3b --impl octomega --impl hf_sdpa \
      --octomega-set model.cross_entropy=chunked \
      --octomega-set model.compile=layers,model.cross_entropy=chunked \
      --out "$out/train_throughput_3b.json" 2>&1 | tee "$out/train_throughput_3b.log" ;;
  *) echo "unknown phase $phase (1b or 3b)" >&2; exit 2 ;;
esac
