"""Data aggregation ("version 2" of the seeds' model-based RL): plan with the current model,
collect the episodes back into shards, fine-tune the model on old + new data, plan again.

    python plan.py aggregate --config configs/plan/aggregate.yaml --checkpoint CKPT

Round r (0..rounds-1): evaluate the policy with model r on `eval_episodes`; run it on
`collect_episodes` (keep them disjoint from the evaluation episodes) recording every step as a
shard of schema v1 (frames, commanded keypoints, joints: what the exploration data hold); cache
their features; fine-tune model r on the base data + everything collected so far (the training
CLI as a function, `--model.init_from`) -> model r+1. A last evaluation scores the final model. Success per round
goes to `out`/rounds.json.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from dexwm.control.policy import Policy


def finetune(
    checkpoint: str,
    data: list[dict],
    out: Path,
    steps: int,
    train_configs: list[str],
    extra_args: list[str],
) -> str:
    """Fine-tune from `checkpoint`'s weights on `data` sources (the training CLI, called as a
    function in this process); returns the new last.ckpt."""
    from dexwm.training.cli import fit

    args = [a for c in train_configs for a in ("--config", c)]
    args += [
        "--model.init_from", checkpoint, "--data.train", json.dumps(data),
        "--trainer.max_steps", str(steps), "--trainer.default_root_dir", str(out),
        "--trainer.enable_progress_bar", "false", *extra_args,
    ]  # fmt: skip
    return fit(args)


def aggregate(
    checkpoint: str,
    policy: Policy,
    base_data: list[str],
    out: str,
    rounds: int = 2,
    tasks: list[str] = ("reach", "grasp", "place"),  # noqa: B006 (read-only)
    eval_episodes: list[int] = tuple(range(10)),  # noqa: B008
    collect_episodes: list[int] = tuple(range(25, 50)),  # noqa: B008
    collect_weight: float = 1.0,
    finetune_steps: int = 300,
    train_configs: list[str] = ("configs/model/tiny.yaml", "configs/train/tiny.yaml"),  # noqa: B006
    train_args: list[str] = (),  # noqa: B006
    max_steps: int | None = None,
    workers: int = 1,
    threads: int = 1,
    video: bool = False,
) -> dict:
    """Run `rounds` of evaluate -> collect -> fine-tune, then a final evaluation; returns (and
    writes to out/rounds.json) the success per round."""
    from dexwm.control.episodes import evaluate
    from dexwm.data.feature_cache import cache_features
    from dexwm.models.encoders import FrozenEncoder
    from dexwm.models.world_model import WorldModel

    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    overlap = set(eval_episodes) & set(collect_episodes)
    if overlap:
        raise ValueError(f"collect_episodes overlap the evaluation episodes: {sorted(overlap)}")
    # a clear error now, not after an hour of planning
    enc = WorldModel.from_checkpoint(checkpoint).encoder_spec
    out_dir = Path(out)
    common = dict(tasks=list(tasks), workers=workers, threads=threads, max_steps=max_steps)
    sources = [{"paths": list(base_data), "weight": 1.0, "name": "base"}]
    history = []
    # the collector is a copy of the policy as configured: once an evaluation ran in this process
    # the policy holds the rig and its renderer, which cannot be copied
    template = copy.deepcopy(policy)
    for r in range(rounds + 1):
        rd = out_dir / f"round{r}"
        ev = evaluate([policy], episodes=list(eval_episodes), checkpoint=checkpoint,
                      out=rd / "eval", video=video, **common)  # fmt: skip
        summary = ev["summary"][policy.name]
        history.append({"round": r, "checkpoint": checkpoint, "summary": summary})
        (out_dir / "rounds.json").write_text(json.dumps(history, indent=1))
        if r == rounds:
            break
        collector = copy.deepcopy(template)
        collector.name = f"{policy.name}_collect"
        evaluate([collector], episodes=list(collect_episodes), checkpoint=checkpoint,
                 out=rd / "collect", video=False, stop_on_success=False,
                 collect=rd / "shards", **common)  # fmt: skip
        cache_features(str(rd / "shards" / "*.tar"), rd / "feats", enc.to_dict(), FrozenEncoder,
                       progress=False)  # fmt: skip
        sources.append({"paths": [str(rd / "feats")], "weight": collect_weight, "name": f"mpc{r}"})
        checkpoint = finetune(checkpoint, sources, rd / "train", finetune_steps,
                              list(train_configs), list(train_args))  # fmt: skip
    return {"rounds": history}
