"""The main job on the built-in default data, end to end on a CPU machine.

Usage:
    python demo.py                 # ~20 min on 2 cores: runs/demo/report.md
    python demo.py --quick         # a few minutes, every stage on tiny amounts (CI): runs/demo_quick
    python demo.py --fresh train   # redo a stage (and reuse the others)

Stages: simulated exploration episodes of three embodiments (Allegro hand on a Franka Panda, a
free-floating Shadow hand standing in for human video, the Panda's parallel gripper standing in for
DROID) -> frozen-encoder features (offline ImageNet EfficientNet-Lite0) -> the tiny world model ->
open-loop evaluation on held-out episodes with baselines -> MPC planning of reach / grasp / place on
the Allegro rig -> report.md with every number measured. A second run reuses finished stages.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering without a display
os.environ.setdefault("LP_NUM_THREADS", "1")  # Mesa software rendering: one thread per process


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny amounts of everything (CI)")
    ap.add_argument("--out", default=None, help="run folder (default runs/demo or runs/demo_quick)")
    ap.add_argument(
        "--fresh",
        nargs="*",
        default=[],
        help="stages to redo: 'sim data' features train evaluate plan",
    )
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from demo_stages import DemoConfig, run_demo

    cfg = DemoConfig.small() if args.quick else DemoConfig()
    if args.out:
        cfg.out = args.out
    cfg.workers = args.workers
    run_demo(cfg, fresh=args.fresh)


if __name__ == "__main__":
    main()
