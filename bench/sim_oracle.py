"""Scripted-oracle success rates on the 50 evaluation episodes of each Allegro task, under the
paper's ("dexwm") and the strict thresholds; prints and writes bench/results/sim_oracle.json.

Usage:
    python bench/sim_oracle.py [--tasks reach grasp place] [--episodes 50]
        [--out bench/results/sim_oracle.json]

Success = the task's test held for 10 consecutive 10 Hz control steps within the episode's step
budget (see dexwm/sim/tasks.py). The rates are an upper bound for planners on this rig.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")  # Mesa llvmpipe: 1 thread is faster here (s.6)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from dexwm.io import atomic_write_json  # noqa: E402
from dexwm.sim.oracle import run_oracle  # noqa: E402
from dexwm.sim.rig import Rig  # noqa: E402
from dexwm.sim.tasks import MAX_STEPS, N_EPISODES, TASKS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--episodes", type=int, default=N_EPISODES)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/sim_oracle.json")
    args = parser.parse_args()
    rig = Rig("allegro")
    results = {}
    for task in args.tasks:
        t0 = time.perf_counter()
        runs = [run_oracle(rig, task, i) for i in range(args.episodes)]
        entry = {"episodes": len(runs), "max_steps": MAX_STEPS[task]}
        for th in ("dexwm", "strict"):
            steps = [r[f"{th}_step"] for r in runs if r[th]]
            entry[th] = {
                "success_rate": round(float(np.mean([r[th] for r in runs])), 3),
                "mean_steps_to_success": round(float(np.mean(steps)), 1) if steps else None,
            }
        entry["failures"] = [
            {
                "episode": r["episode"],
                "object": r["object"],
                "dexwm": r["dexwm"],
                "strict": r["strict"],
            }
            for r in runs
            if not (r["dexwm"] and r["strict"])
        ]
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        results[task] = entry
        print(task, json.dumps({k: entry[k] for k in ("dexwm", "strict")}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
