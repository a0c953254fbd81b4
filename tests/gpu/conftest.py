"""The GPU tier (`pytest -m gpu tests/gpu`; bench/device_check.sh runs it on the GPU machine). Every test here carries
the `gpu` marker, so tests/conftest.py skips it, naming why, where CUDA is not available.

Each module runs its work in one spawned process on GPU 0 with nccl, a world of one (octomega.testing.run_distributed
with gpu=True; a module fixture shares it between the module's tests), so a CUDA error or a hang stays in that
process and the next module starts clean. The small models and the data are built here: nothing is downloaded.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)  # gpu_helpers (spawned ranks inherit sys.path)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "rl"))  # rl_helpers: the RL loop's tiny configs

