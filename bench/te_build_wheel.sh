#!/usr/bin/env bash
# The transformer_engine_torch extension wheel for the GPU machine, built HERE, without a GPU, so that
# `bench/device_te.sh build` only installs it (no 2.5-minute compile in device time). The extension is C++ only
# (a torch CppExtension: no CUDA kernels, those are in the core library), compiled against torch's headers and the
# CUDA 13.0 headers; it has to match the device's torch exactly, so it is built against the same torch from PyPI.
#   bash bench/te_kit.sh            # first: .te/small (the sdist, cudnn-frontend), .te/dl (the core wheel)
#   bash bench/te_build_wheel.sh    # then: the wheel lands in .te/small, which te_kit.sh's build call carries
# Environment: TE_BUILD (scratch folder, default /tmp/te_build: a throwaway venv with torch $TORCH and PyPI's
# nvidia-* CUDA 13.0 packages, about 5 GB), PY312 (a Python 3.12, default python3.12), TORCH (default 2.11.0, the
# GPU machine's), MAX_JOBS (parallel compiles, default 2). Everything runs under `nice -n 19`.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${TE_BUILD:-/tmp/te_build}
TORCH=${TORCH:-2.11.0}
TE_VERSION=2.20.2
sdist=.te/small/transformer_engine_torch-$TE_VERSION.tar.gz
core=$(ls .te/dl/transformer_engine_cu13-$TE_VERSION-*.whl 2>/dev/null | head -1 || true)
[ -f "$sdist" ] && [ -n "$core" ] || { echo "te_build_wheel: run bench/te_kit.sh first ($sdist, .te/dl/)" >&2; exit 2; }
mkdir -p "$B"
if [ ! -x "$B/venv/bin/python" ]; then
  "${PY312:-python3.12}" -m venv "$B/venv"
fi
pip=("$B/venv/bin/python" -m pip)
# torch as on the device (2.11.0+cu130 on PyPI) and the CUDA 13.0 pieces of a toolkit: nvcc (the build locates the
# toolkit root through it), its compiler front end and libdevice (crt, nvvm), the C++ library headers (cccl)
"${pip[@]}" install -q "torch==$TORCH" ninja wheel "setuptools>=61" pybind11 packaging numpy \
  "nvidia-cuda-nvcc==13.0.88.*" "nvidia-cuda-crt==13.0.88.*" "nvidia-nvvm==13.0.88.*" \
  "nvidia-cuda-cccl==13.0.85.*" 2>&1 | grep -v "^WARNING: Location" || true
"$B/venv/bin/python" -c "import torch; print('building against torch', torch.__version__, 'CUDA', torch.version.cuda)"
# the core library and cudnn-frontend, where the build looks for TE's and cuDNN's C++ headers (as device_te.sh)
[ -d "$B/build_site/transformer_engine" ] || "${pip[@]}" install -q --no-index --no-deps --no-compile \
  --target "$B/build_site" "$core" .te/small/nvidia_cudnn_frontend-*.whl
site=$("$B/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# Built in place from the unpacked sdist (pip builds a local directory in its tree), so that a build stopped part
# way (on 2 busy cores it takes hours) resumes where it was: ninja recompiles only what is missing or older.
src=$B/src/transformer_engine_torch-$TE_VERSION
# (re)unpack when needed: setup.py removes its build_tools/ after a finished wheel; build/ is kept either way
[ -d "$src/build_tools" ] || { mkdir -p "$B/src" && tar -xzf "$sdist" -C "$B/src"; }
objects() { find "$src/build" -name "*.o" 2>/dev/null | wc -l || true; }
done_before=$(objects)
rm -rf "$B/out" && mkdir -p "$B/out"
t0=$(date +%s)
# NVTE_PYTORCH_FORCE_BUILD: compile (setup.py would otherwise try to download a prebuilt wheel from GitHub);
# NVTE_BUILD_USE_NVIDIA_WHEELS: headers from every nvidia/*/include of the venv (CUDA, cuDNN, NCCL), not one toolkit
CUDA_HOME=$site/nvidia/cu13 NVTE_CUDA_ARCHS=90 NVTE_WITH_NCCL_EP=0 NVTE_FRAMEWORK=pytorch \
  NVTE_PYTORCH_FORCE_BUILD=TRUE NVTE_BUILD_USE_NVIDIA_WHEELS=1 MAX_JOBS=${MAX_JOBS:-2} PYTHONPATH=$B/build_site \
  nice -n 19 "${pip[@]}" wheel --no-build-isolation --no-deps -v -w "$B/out" "$src" >> "$B/build.log" 2>&1 \
  || { tail -40 "$B/build.log"; echo "te_build_wheel: build stopped after $(( $(date +%s) - t0 )) s with" \
       "$(objects) of $(find "$src/csrc" -name "*.cpp" | wc -l) objects" \
       "(log: $B/build.log); run again to resume" >&2; exit 1; }
wheel=$(ls "$B"/out/transformer_engine_torch-*.whl | head -1)
echo "built $(basename "$wheel") in $(( $(date +%s) - t0 )) s this run ($done_before objects were built before;" \
     "$(du -h "$wheel" | cut -f1)); log $B/build.log"
cp "$wheel" .te/small/
echo "copied into .te/small/: device_te.sh build installs it instead of compiling (rerun bench/te_kit.sh for the calls)"
