"""Plan with a trained world model on the sim rig: MPC evaluation, baselines, BC training, and data
aggregation rounds (jsonargparse, YAML configs in configs/plan/).

Usage:
  python plan.py eval --config configs/plan/default.yaml --checkpoint runs/train/tiny/checkpoints/last.ckpt
  python plan.py eval --config configs/plan/dexwm.yaml --checkpoint CKPT --tasks '[reach]' --episodes 5
  python plan.py eval --config configs/plan/baselines.yaml --out runs/plan/baselines   # random, oracle, BC
  python plan.py bc --shards runs/plan/feats/allegro --out runs/plan/bc.pt          # train the BC baseline
  python plan.py aggregate --config configs/plan/aggregate.yaml --checkpoint CKPT   # model-based RL rounds
  python plan.py eval --print_config                                                # every option

`eval` writes episodes.jsonl, summary.json, summary.md, GIFs (camera | goal) and the resolved
config (+ git commit) to --out. Episodes run in --workers processes with --threads torch threads.
Python entry point for other stages: `dexwm.planning.evaluate(...)` returns the same results dict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering on a machine without a display

from jsonargparse import ArgumentParser, Namespace  # noqa: E402

from dexwm.control.aggregate import aggregate  # noqa: E402
from dexwm.control.bc import train_goal_bc  # noqa: E402
from dexwm.control.episodes import evaluate  # noqa: E402

COMMANDS = {"eval": evaluate, "bc": train_goal_bc, "aggregate": aggregate}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subcommands()
    for name, fn in COMMANDS.items():
        p = ArgumentParser()
        p.add_argument("--config", action="config")
        p.add_function_arguments(fn, skip={"on_record"})
        sub.add_subcommand(name, p, help=(fn.__doc__ or "").split("\n")[0])
    return parser


def save_config(parser: ArgumentParser, cfg: Namespace, out: str | None) -> None:
    """The resolved config and the git commit, beside the results."""
    if not out:
        return
    git = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse",
                          "HEAD"], capture_output=True, text=True)  # fmt: skip
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.write(f"# git commit: {git.stdout.strip() or None}\n# command: {' '.join(sys.argv)}\n")
        f.write(parser.dump(cfg))


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    cfg = parser.parse_args(argv)
    name = cfg.subcommand
    sub = cfg[name]
    save_config(parser, cfg, sub.get("out") if name != "bc" else os.path.dirname(sub.out) or ".")
    init = parser.instantiate(cfg)[name]
    kwargs = {k: v for k, v in vars(init).items() if k != "config" and not k.startswith("__")}
    result = COMMANDS[name](**kwargs)
    if name == "eval":
        from dexwm.control.episodes import summary_markdown

        print(summary_markdown(result["summary"]))
    else:
        print(json.dumps(result, indent=1, default=str)[:4000])
    return result


if __name__ == "__main__":
    main()
