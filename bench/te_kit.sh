#!/usr/bin/env bash
# Transformer Engine for the GPU machine, prepared here (the device has no TE and no network, and a call carries at
# most 64 MiB): docs/te_on_device.md's method, as scripts. Run once per checkout, in the repo root:
#   bash bench/te_kit.sh
# It downloads (pip, from the package registry) into folders that .gitignore ignores:
#   .whl/          megatron_core 0.19.2 (manylinux build: it holds compiled dataset helpers)
#   .te/small/     transformer_engine 2.20.2 (the Python package), nvidia-cudnn-frontend (headers for the build),
#                  the transformer_engine_torch 2.20.2 sdist (built on the device, against its torch), pydantic and
#                  what it needs (Megatron-Core's TE path imports it), core.name and core.md5 of the big wheel
#   .te/p1 ...     the 276 MB transformer_engine_cu13 wheel cut into 56 MiB parts, one folder per part (one carry
#                  each); the last part is small enough to travel with .te/small and .whl
# and prints the device calls (bench/device_te.sh runs them there).
set -euo pipefail
cd "$(dirname "$0")/.."
TE_VERSION=2.20.2
PART_MB=56
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
download() { "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
               "${platforms[@]}" "$@" 2>&1 | grep -v "^WARNING: Location" || true; }

mkdir -p .whl .te/small .te/dl
ls .whl/megatron_core-0.19.2-*.whl >/dev/null 2>&1 || download -d .whl megatron-core==0.19.2
download -d .te/small "transformer-engine==$TE_VERSION" nvidia-cudnn-frontend pydantic pydantic-core annotated-types \
  typing-inspection
# The torch extension is an sdist: pip needs torch importable to resolve it without building (no build isolation).
ls .te/small/transformer_engine_torch-$TE_VERSION.tar.gz >/dev/null 2>&1 \
  || "$py" -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d .te/small \
       "transformer-engine-torch==$TE_VERSION" 2>&1 | grep -v "^WARNING: Location" || true
download -d .te/dl "transformer-engine-cu13==$TE_VERSION"
core=$(ls .te/dl/transformer_engine_cu13-$TE_VERSION-*.whl)
basename "$core" > .te/small/core.name
md5sum "$core" | cut -d' ' -f1 > .te/small/core.md5
rm -rf .te/p[0-9]* .te/split && mkdir -p .te/split
split -b "${PART_MB}M" -d -a 2 "$core" .te/split/part
n=0
for part in .te/split/part*; do
  n=$((n + 1)); mkdir -p ".te/p$n"; mv "$part" ".te/p$n/"; cp .te/small/core.name ".te/p$n/"
done
rm -rf .te/split
for f in .te/small/transformer_engine_torch-$TE_VERSION.tar.gz .te/small/transformer_engine-$TE_VERSION-*.whl \
         .te/small/nvidia_cudnn_frontend-*.whl .te/small/pydantic-*.whl .whl/megatron_core-0.19.2-*.whl; do
  [ -e "$f" ] || { echo "te_kit: missing $f after the downloads" >&2; exit 1; }
done
du -sh .te/p* .te/small .whl | sed 's/^/  /'
echo "Device calls, back to back (the machine goes back after 30 s idle; each is one \`run\`):"
for i in $(seq 1 $((n - 1))); do
  echo "  carry [\".te/p$i\"]                       bash bench/device_te.sh append            (timeout_s 120)"
done
echo "  carry [\".te/p$n\", \".te/small\", \".whl\"]   bash bench/device_te.sh build             (timeout_s 600, ~3 min)"
echo "  (no carry: the build's files stay there)  bash bench/device_te.sh bench 1b|3b   (timeout_s 600)"
