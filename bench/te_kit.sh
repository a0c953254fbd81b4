#!/usr/bin/env bash
# Transformer Engine for the GPU machine, prepared here (the device has no TE and no network, and a call carries at
# most 64 MiB): docs/te_on_device.md's method, as scripts. Run once per checkout, in the repo root:
#   bash bench/te_kit.sh
# It downloads (pip, from the package registry) into folders that .gitignore ignores:
#   .whl/          megatron_core 0.19.2 (manylinux build: it holds compiled dataset helpers)
#   .te/small/     transformer_engine 2.20.2 (the Python package), nvidia-cudnn-frontend (headers for the build),
#                  the transformer_engine_torch 2.20.2 sdist (built on the device, against its torch), pydantic and
#                  what it needs (Megatron-Core's TE path imports it), core.name and core.md5 of the big wheel
#   .te/p1 ...     the 276 MB transformer_engine_cu13 wheel cut into parts, one folder per part (one carry each),
#                  each sized so that it and the working tree (which travels with every call) stay under the
#                  64 MiB a call carries; the build call carries .te/small and .whl alone
# and prints the device calls (bench/device_te.sh runs them there). A transformer_engine_torch wheel built earlier
# (bench/te_build_wheel.sh here, or device_te.sh build's copy in $OUT) kept in .te/small is used instead of the sdist.
set -euo pipefail
cd "$(dirname "$0")/.."
TE_VERSION=2.20.2
LIMIT=$((64 * 1024 * 1024))  # bytes one device call carries: the working tree plus the carried folders
MARGIN=$((1024 * 1024))
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
# The working tree travels with every call (tracked and untracked files that git does not ignore).
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
part_bytes=$(( (LIMIT - tree - MARGIN) / 1048576 * 1048576 ))
[ "$part_bytes" -ge $((16 * 1048576)) ] || { echo "te_kit: the working tree ($tree bytes) leaves no room for parts" >&2; exit 1; }
rm -rf .te/p[0-9]* .te/split && mkdir -p .te/split
split -b "$part_bytes" -d -a 2 "$core" .te/split/part
n=0
for part in .te/split/part*; do
  n=$((n + 1)); mkdir -p ".te/p$n"; mv "$part" ".te/p$n/"; cp .te/small/core.name ".te/p$n/"
done
rm -rf .te/split
for f in .te/small/transformer_engine_torch-$TE_VERSION.tar.gz .te/small/transformer_engine-$TE_VERSION-*.whl \
         .te/small/nvidia_cudnn_frontend-*.whl .te/small/pydantic-*.whl .whl/megatron_core-0.19.2-*.whl; do
  [ -e "$f" ] || { echo "te_kit: missing $f after the downloads" >&2; exit 1; }
done
small=$(du -cb .te/small .whl | tail -1 | cut -f1)
if [ $((tree + small)) -gt "$LIMIT" ]; then
  echo "te_kit: .te/small and .whl ($small bytes) and the working tree ($tree bytes) exceed the 64 MiB of a call" >&2
  exit 1
fi
du -sh .te/p* .te/small .whl | sed 's/^/  /'
echo "working tree $((tree / 1048576)) MiB; parts of $((part_bytes / 1048576)) MiB; build call $(((tree + small) / 1048576)) MiB of 64"
ls .te/small/transformer_engine_torch-*-linux_x86_64.whl >/dev/null 2>&1 \
  && echo "prebuilt extension wheel in .te/small: build installs it (no compile on the device)"
echo "Device calls, back to back (the machine goes back after 30 s idle; each is one \`run\`):"
for i in $(seq 1 "$n"); do
  echo "  carry [\".te/p$i\"]                 bash bench/device_te.sh append            (timeout_s 120)"
done
echo "  carry [\".te/small\", \".whl\"]        bash bench/device_te.sh build             (timeout_s 600)"
echo "  (no carry: TE stays installed)       bash bench/device_check.sh --te           (timeout_s 540)"
echo "                                       or bash bench/device_te.sh bench 1b|3b    (timeout_s 600)"
