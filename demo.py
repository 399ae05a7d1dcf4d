"""The main job on the built-in default data, end to end on a CPU machine.

Usage:
    python demo.py                       # ~20 min on 2 cores: runs/demo/report.md
    python demo.py --quick               # = --config configs/demo/quick.yaml: a few minutes (CI)
    python demo.py --fresh '[train]'     # redo a stage (and reuse the others)
    python demo.py --print_config        # every setting (demo_stages.DemoConfig)

Stages: simulated exploration episodes of three embodiments (Allegro hand on a Franka Panda, a
free-floating Shadow hand standing in for human video, the Panda's parallel gripper standing in for
DROID) -> frozen-encoder features (offline ImageNet EfficientNet-Lite0) -> the tiny world model ->
open-loop evaluation on held-out episodes with baselines -> MPC planning of reach / grasp / place on
the Allegro rig -> report.md with every number measured. A second run reuses finished stages;
the resolved settings are in <out>/config.yaml.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering without a display
os.environ.setdefault("LP_NUM_THREADS", "1")  # Mesa software rendering: one thread per process

from demo_stages import DemoConfig, run_demo  # noqa: E402
from dexwm.config import parse  # noqa: E402

QUICK = str(Path(__file__).resolve().parent / "configs/demo/quick.yaml")


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    argv = [a for x in argv for a in (["--config", QUICK] if x == "--quick" else [x])]
    cfg = parse(DemoConfig, argv, description=__doc__.split("\n\n")[0])
    return run_demo(cfg)


if __name__ == "__main__":
    main()
