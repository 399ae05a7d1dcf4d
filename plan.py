"""Plan with a trained world model on the sim rig: MPC evaluation, baselines, BC training, and data
aggregation rounds (jsonargparse, YAML configs in configs/plan/).

Usage:
  python plan.py eval --config configs/plan/default.yaml --checkpoint runs/train/tiny/checkpoints/last.ckpt
  python plan.py eval --config configs/plan/dexwm.yaml --checkpoint CKPT --tasks '[reach]' --episodes 5
  python plan.py eval --config configs/plan/baselines.yaml --out runs/plan/baselines   # random, oracle, BC
  python plan.py bc --shards runs/plan/feats/allegro --out runs/plan/bc.pt          # train the BC baseline
  python plan.py goal_pose --shards runs/plan/feats/allegro --out runs/plan/goal_pose.pt  # PoseCost's head
  python plan.py aggregate --config configs/plan/aggregate.yaml --checkpoint CKPT   # model-based RL rounds
  python plan.py diagnose --config configs/plan/default.yaml --checkpoint CKPT --episodes 6  # why
  python plan.py eval --print_config                                                # every option
  python plan.py serve --checkpoint CKPT --config configs/plan/default.yaml [--port 8000]  # planning server
  python plan.py eval --config configs/plan/default.yaml --server ws://127.0.0.1:8000   # sim through it

`eval` writes episodes.jsonl, summary.json, summary.md, GIFs (camera | goal) and the resolved
config (+ git commit) to --out. Episodes run in --workers processes with --threads torch threads.
Python entry point for other stages: `dexwm.control.evaluate(...)` returns the same results dict.
`serve` plans for a robot elsewhere (websocket + msgpack; client in clients/python, protocol in
docs/serving.md): it binds 127.0.0.1 unless --host says otherwise, which needs DEXWM_TOKEN set.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering on a machine without a display

from dexwm.config import parse  # noqa: E402
from dexwm.control.aggregate import aggregate  # noqa: E402
from dexwm.control.bc import train_goal_bc  # noqa: E402
from dexwm.control.diagnostics import diagnose  # noqa: E402
from dexwm.control.episodes import evaluate, summary_markdown  # noqa: E402
from dexwm.control.goal_pose import train_goal_pose  # noqa: E402
from dexwm.serve import serve  # noqa: E402

COMMANDS = {
    "eval": evaluate, "bc": train_goal_bc, "aggregate": aggregate, "diagnose": diagnose,
    "serve": serve, "goal_pose": train_goal_pose,
}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    name, kwargs = parse(COMMANDS, argv, description=__doc__.split("\n\n")[0])
    result = COMMANDS[name](**kwargs)
    if name == "eval":
        print(summary_markdown(result["summary"]))
    elif name != "serve":
        print(json.dumps(result, indent=1, default=str)[:4000])
    return result


if __name__ == "__main__":
    main()
