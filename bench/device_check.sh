#!/usr/bin/env bash
# The GPU machine's one call (issue 19): the GPU test tier, then the 1B training-throughput bench, under 8 minutes.
# bench/device_check.py does the work (its docstring: the parts, their time boxes, the files in $OUT);
# bench/NOTES.md, "The one-call device check", has the exact device calls.
#   bash bench/device_check.sh [--te] [--budget-s S] [--parts env,install,tests,bench] [--dry-run]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
exec "${PYTHON:-python3}" bench/device_check.py "$@"
