#!/usr/bin/env bash
# Issue 8's Transformer Engine path on the GPU machine, from the kit bench/te_kit.sh made here (it prints the
# calls). Everything lands under $TE_TMP (/tmp/te), which lives as long as the machine stays warm:
#   append        add the carried .te/p<i>/ parts to $TE_TMP/<core wheel name>, in order, each once
#   build         append any part carried with it, check the md5, build the transformer_engine_torch extension
#                 against this machine's torch (~2.5 min on 16 cores; a wheel built earlier and carried in .te/small
#                 is used instead: bench/te_build_wheel.sh builds it without a GPU), install everything with ONE pip
#                 call (TE checks that its three distributions match), import-check TE on the GPU; a wheel built
#                 here goes to $OUT (carry it in .te/small next time)
#   bench 1b|3b   bench/train_throughput.py on the TE spec: bf16, each TE option of bench/NOTES.md, FP8, and the
#                 local spec in the same environment, beside transformers (1b ~6 min, 3b ~5 min)
# Results land in $OUT: the bench's JSON and console log, gpu.txt, te_build.log.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
T=${TE_TMP:-/tmp/te}
out=${OUT:-bench/results/device}
mkdir -p "$T" "$out"
py=${PYTHON:-python3}

append_parts() {  # parts already appended are listed in $T/appended; a gap in the numbering is an error
  local part i name
  touch "$T/appended"
  name=$(cat .te/p*/core.name 2>/dev/null | head -1)
  [ -n "$name" ] || { echo "device_te: no .te/p<i>/ part carried" >&2; return 2; }
  for i in $(seq 1 99); do
    [ -d ".te/p$i" ] || continue
    grep -qx "p$i" "$T/appended" && continue
    if [ "$i" -gt 1 ] && ! grep -qx "p$((i - 1))" "$T/appended"; then
      echo "device_te: part p$i is here but p$((i - 1)) was never appended: carry the parts in order" >&2; return 2
    fi
    for part in ".te/p$i"/part*; do cat "$part" >> "$T/$name.partial"; done
    echo "p$i" >> "$T/appended"
    echo "appended p$i: $(stat -c %s "$T/$name.partial") bytes so far"
  done
}

case "${1:-}" in
  append)
    append_parts ;;
  build)
    [ -f .te/small/core.md5 ] || { echo "device_te: carry .te/small (and .whl) with the last part" >&2; exit 2; }
    name=$(cat .te/small/core.name)
    if ls -d .te/p[0-9]* >/dev/null 2>&1; then append_parts || exit 2; fi  # te_kit.sh sends every part by append
    sum=$(md5sum "$T/$name.partial" | cut -d' ' -f1)
    if [ "$sum" != "$(cat .te/small/core.md5)" ]; then
      echo "device_te: $name reassembled with md5 $sum, expected $(cat .te/small/core.md5): parts missing or" \
           "repeated ($(tr '\n' ' ' < "$T/appended")); start again on a fresh machine" >&2
      exit 1
    fi
    mv "$T/$name.partial" "$T/$name"
    small=.te/small
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$T/build_site" "$T/$name" \
      $small/nvidia_cudnn_frontend-*.whl || exit 1
    built=$(ls $small/transformer_engine_torch-*-linux_x86_64.whl 2>/dev/null | head -1)
    if [ -z "$built" ]; then
      echo "building transformer_engine_torch (log: $out/te_build.log)"
      cuda=${CUDA_HOME:-$(ls -d /usr/local/cuda-13* /usr/local/cuda 2>/dev/null | head -1)}
      t0=$(date +%s)
      CUDA_HOME=$cuda NVTE_CUDA_ARCHS=90 MAX_JOBS=$(nproc) NVTE_WITH_NCCL_EP=0 NVTE_FRAMEWORK=pytorch \
        PYTHONPATH=$T/build_site "$py" -m pip wheel --no-build-isolation --no-deps -w "$T/built" \
        $small/transformer_engine_torch-*.tar.gz > "$out/te_build.log" 2>&1 \
        || { tail -40 "$out/te_build.log"; exit 1; }
      echo "built in $(( $(date +%s) - t0 )) s"
      built=$(ls "$T"/built/transformer_engine_torch-*.whl | head -1)
      cp "$built" "$out/"
    fi
    # ONE install of the three TE distributions (TE checks at import that their versions match) and Megatron-Core
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$T/site" "$T/$name" "$built" \
      $small/transformer_engine-*-py3-none-any.whl $small/nvidia_cudnn_frontend-*.whl .whl/megatron_core-*.whl \
      || exit 1
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$T/site2" $small/pydantic-*.whl \
      $small/pydantic_core-*.whl $small/annotated_types-*.whl $small/typing_inspection-*.whl || exit 1
    PYTHONPATH=$T/site:$T/site2 "$py" -c "
import torch, transformer_engine, transformer_engine.pytorch as te
from octomega.model.llama import te_available
x = torch.randn(64, 64, device='cuda', dtype=torch.bfloat16)
y = te.Linear(64, 64, params_dtype=torch.bfloat16)(x)
print('transformer_engine', transformer_engine.__version__, 'ok on', torch.cuda.get_device_name(), tuple(y.shape),
      'octomega te_available:', te_available())" || exit 1
    touch "$T/ready" ;;
  bench)
    phase=${2:?bench 1b or 3b}
    [ -f "$T/ready" ] || { echo "device_te: run 'build' first on this machine (it goes back after 30 s idle)" >&2; exit 2; }
    export PYTHONPATH=$T/site:$T/site2${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/gpu.txt" 2>&1
    bench=("$py" bench/train_throughput.py --warmup 2 --steps 6 --profile --timeout-s 240 --layer-spec te)
    case "$phase" in
      1b)  # TE bf16 (the baseline), TE's fused RoPE, TE's cross entropy, FP8 delayed, the local spec beside it
        "${bench[@]}" --shape 1b --impl octomega --impl hf_sdpa \
          --octomega-set model.rope_fusion=true \
          --octomega-set model.rope_fusion=true,model.cross_entropy=te \
          --octomega-set model.rope_fusion=true,model.fp8=hybrid \
          --octomega-set model.layer_spec=local \
          --out "$out/train_throughput_te_1b.json" 2>&1 | tee "$out/train_throughput_te_1b.log" ;;
      3b)  # where FP8 should start to pay (bench/NOTES.md item 6)
        "${bench[@]}" --shape 3b --impl octomega --impl hf_sdpa \
          --octomega-set model.rope_fusion=true \
          --octomega-set model.rope_fusion=true,model.fp8=hybrid \
          --octomega-set model.rope_fusion=true,model.fp8=hybrid,model.fp8_recipe=tensorwise \
          --out "$out/train_throughput_te_3b.json" 2>&1 | tee "$out/train_throughput_te_3b.log" ;;
      *) echo "unknown phase $phase (1b or 3b)" >&2; exit 2 ;;
    esac ;;
  *) sed -n 2,13p "$0"; exit 2 ;;
esac
