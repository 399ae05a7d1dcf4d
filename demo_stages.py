"""The demo's stages: sim data -> features -> tiny model -> evaluation -> planning. Each stage
records its outputs and time in <out>/stages.json; a second run reuses finished stages (and the
stages themselves resume inside: shard jobs, training from last.ckpt).

Settings: `DemoConfig` below (defaults = the full demo); configs/demo/quick.yaml states what the
quick run changes. Model, training, evaluation and planner settings are read from their own
configs (configs/model/tiny.yaml, configs/train/tiny.yaml, configs/eval/tiny.yaml,
configs/plan/default.yaml), never copied here.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dexwm.io import atomic_write_json

EMBODIMENTS = ("allegro", "shadow", "panda_gripper")
REPO = Path(__file__).resolve().parent
MODEL, TRAIN = REPO / "configs/model/tiny.yaml", REPO / "configs/train/tiny.yaml"


@dataclass
class DemoConfig:
    """The main job on the built-in default data.

    Args:
        out: run folder.
        episodes: exploration episodes per embodiment (training).
        heldout: held-out episodes per embodiment (evaluation).
        frames: frames per episode, 10 Hz.
        size: frame side in pixels.
        train_steps: training steps of the tiny model.
        batch_size: training batch size.
        eval: evaluation config file (None: the DexWM protocol's defaults); its data,
            checkpoint and out_dir are the demo's.
        eval_horizon: rollout steps of 0.2 s.
        eval_clips: clips per held-out source.
        probe_steps: keypoint-probe training steps (evaluation model).
        decoder_steps: pixel-decoder training steps (evaluation model).
        bc_steps: training steps of the goal-conditioned BC baseline (on the Allegro features).
        bc_val_episodes: Allegro episodes BC holds out to pick its best step.
        plan: planning config whose policies are the demo's planner (BC, random and the oracle
            join; BC wrapped like the planner, e.g. in the same `Staged` sub-goal switching).
        plan_episodes: planning episodes per task.
        plan_max_steps: control steps per episode (None: the task's budget).
        workers: parallel processes for data preparation.
        seed: data seed.
        fresh: stages to redo ('sim data', features, train, evaluate, bc, plan); the others
            are reused when finished.
    """

    out: str = "runs/demo"
    episodes: dict[str, int] = field(
        default_factory=lambda: {"allegro": 160, "shadow": 100, "panda_gripper": 100}
    )
    heldout: int = 24
    frames: int = 40
    size: int = 128
    train_steps: int = 480
    batch_size: int = 32
    eval: str | None = None
    eval_horizon: int = 15
    eval_clips: int = 48
    probe_steps: int = 150
    decoder_steps: int = 100
    bc_steps: int = 1500
    bc_val_episodes: int = 20
    plan: str = str(REPO / "configs/plan/default.yaml")
    plan_episodes: int = 10
    plan_max_steps: int | None = None
    workers: int = 2
    seed: int = 0
    fresh: list[str] = field(default_factory=list)


class Stages:
    """Runs named stages once; records {seconds, result} in stages.json (atomically)."""

    def __init__(self, out: Path) -> None:
        self.path = out / "stages.json"
        self.done: dict = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(
        self, name: str, fn: Callable[[], dict], fresh: bool = False, outputs: tuple[Path, ...] = ()
    ) -> dict:
        """fresh: redo the stage from scratch, its `outputs` removed first (the stages resume
        inside themselves from what an interrupted run left, which a redo must not reuse)."""
        if name in self.done and not fresh:
            print(f"[demo] {name}: done before ({self.done[name]['seconds']:.0f} s), reused")
            return self.done[name]["result"]
        if fresh:
            for path in outputs:
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        print(f"[demo] {name} ...", flush=True)
        t0 = time.time()
        result = fn()
        self.done[name] = {"seconds": round(time.time() - t0, 1), "result": result}
        atomic_write_json(self.path, self.done)
        print(f"[demo] {name}: {self.done[name]['seconds']:.0f} s", flush=True)
        return result


def stage_sim(cfg: DemoConfig, out: Path) -> dict:
    from data_prep.sim_episodes import main as sim_episodes

    result = {}
    # Each job renders in a fresh process: OpenGL contexts of several robots (and later imports)
    # never share one process, and the demo process itself never opens one.
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as pool:
        for emb in EMBODIMENTS:
            for split, n, start in (
                ("train", cfg.episodes[emb], 0),
                ("heldout", cfg.heldout, 100_000),
            ):
                folder = out / "shards" / split / emb
                man = pool.submit(
                    sim_episodes, embodiment=emb, out=folder, episodes=n, frames=cfg.frames,
                    size=cfg.size, seed=cfg.seed, start=start, workers=cfg.workers, items_per_shard=8,
                ).result()  # fmt: skip
                result[f"{split}/{emb}"] = {"folder": str(folder), **man["counts"]}
    return result


def stage_features(cfg: DemoConfig, out: Path) -> dict:
    from dexwm.config import load
    from dexwm.data.feature_cache import cache_features
    from dexwm.models.encoders import FrozenEncoder
    from dexwm.training.module import WorldModelModule

    spec = load(WorldModelModule, MODEL, section="model").wm.encoder_spec.to_dict()
    result = {}
    for split in ("train", "heldout"):
        for emb in EMBODIMENTS:
            src, dst = out / "shards" / split / emb, out / "feats" / split / emb
            man = cache_features(str(src), dst, spec, FrozenEncoder, workers=cfg.workers)
            result[f"{split}/{emb}"] = {"folder": str(dst), **man["counts"]}
    return result


def train_args(cfg: DemoConfig, out: Path) -> list[str]:
    train = [{"paths": [str(out / "feats/train" / e)], "name": e} for e in EMBODIMENTS]
    val = [{"paths": [str(out / "feats/heldout" / e)], "name": e} for e in EMBODIMENTS]
    # Validation and checkpoints every quarter, all in ONE epoch: each new epoch refills the
    # shuffle buffers (~24 s on 2 cores), while validation and checkpoints are step-based.
    every = max(10, cfg.train_steps // 4)
    return [
        "--config", str(MODEL), "--config", str(TRAIN),
        "--data.train", json.dumps(train), "--data.val", json.dumps(val),
        "--data.batch_size", str(cfg.batch_size), "--data.epoch_batches", str(cfg.train_steps),
        "--trainer.max_steps", str(cfg.train_steps), "--trainer.val_check_interval", str(every),
        "--trainer.limit_val_batches", "4", "--checkpoint.every_n_train_steps", str(every),
        "--trainer.default_root_dir", str(out / "train"), "--ckpt_path", "last",
    ]  # fmt: skip


def stage_train(cfg: DemoConfig, out: Path) -> dict:
    import torch

    from dexwm.training.cli import fit

    ckpt = out / "train" / "checkpoints" / "last.ckpt"
    done = ckpt.exists() and torch.load(ckpt, weights_only=True)["global_step"] >= cfg.train_steps
    if not done:
        fit(train_args(cfg, out))
    logs = sorted((out / "train" / "logs").glob("version_*/metrics.csv"))
    return {"checkpoint": str(ckpt), "metrics": [str(p) for p in logs], "steps": cfg.train_steps}


def stage_eval(cfg: DemoConfig, out: Path, ckpt: str) -> dict:
    from dexwm.evaluation import run_eval

    data = [{"paths": [str(out / "feats/heldout" / e)], "name": e} for e in EMBODIMENTS]
    res = run_eval(
        cfg.eval, checkpoint=ckpt, data=data, out_dir=str(out / "eval"), horizon=cfg.eval_horizon,
        max_clips=cfg.eval_clips, probe={"steps": cfg.probe_steps},
        decoder={"steps": cfg.decoder_steps},
    )  # fmt: skip
    return {"folder": str(out / "eval"), "results": str(out / "eval" / "results.json"),
            "seconds_inside": res.get("seconds")}  # fmt: skip


def stage_bc(cfg: DemoConfig, out: Path) -> dict:
    from dexwm.control.bc import train_goal_bc

    path = out / "bc.pt"
    res = train_goal_bc(str(out / "feats/train/allegro"), str(path), steps=cfg.bc_steps,
                        val_episodes=cfg.bc_val_episodes)  # fmt: skip
    return {"checkpoint": str(path), "best_val": res["best_val"], "episodes": res["episodes"]}


def _use_bc(policy, bc: str) -> None:
    """Point a planner's BC prior (configs/plan/default.yaml centres its search on BC's plan) at
    the BC this demo trained."""
    from dexwm.control.bc import BCPolicy

    inner = getattr(policy, "policy", policy)  # inside a `Staged` wrapper or not
    if isinstance(getattr(inner, "prior", None), BCPolicy):
        inner.prior.checkpoint = bc


def _without_pose_cost(policy) -> None:
    """The demo trains no goal-pose head (its 20 minutes have no room for one): the planner's
    `PoseCost` is dropped, so the demo's reach is planned on the feature cost alone."""
    from dexwm.planning import PoseCost

    inner = getattr(policy, "policy", policy)
    if any(isinstance(t, PoseCost) for t in getattr(inner, "costs", ())):
        inner.costs = [t for t in inner.costs if not isinstance(t, PoseCost)]
        inner.goal_pose = None


def stage_plan(cfg: DemoConfig, out: Path, ckpt: str, bc: str) -> dict:
    from dexwm.config import load
    from dexwm.control import Staged, evaluate
    from dexwm.control.baselines import OraclePolicy, RandomPolicy
    from dexwm.control.bc import BCPolicy

    run = load(
        evaluate, cfg.plan, episodes=cfg.plan_episodes, max_steps=cfg.plan_max_steps,
        out=str(out / "plan"), workers=cfg.workers, resume=True,
        threads=max(1, (os.cpu_count() or 1) // cfg.workers),
        checkpoint=ckpt,
    )  # fmt: skip
    baseline = BCPolicy(bc)
    planner = run["policies"][0]
    _use_bc(planner, bc)
    _without_pose_cost(planner)
    if isinstance(planner, Staged):  # the same sub-goal switching as the planner
        p = planner
        baseline = Staged(baseline, p.tasks, p.min_steps, p.patience, p.tolerance, name="bc")
    run["policies"] += [baseline, RandomPolicy(), OraclePolicy()]
    res = evaluate(**run)
    return {"folder": str(out / "plan"), "summary": res["summary"]}


def run_demo(cfg: DemoConfig) -> Path:
    """Run every stage (reusing finished ones unless named in `cfg.fresh`); returns the report."""
    from demo_report import write_report

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out)
    fresh = set(cfg.fresh)
    t0 = time.time()
    stages.run("sim data", lambda: stage_sim(cfg, out), "sim data" in fresh, (out / "shards",))
    stages.run("features", lambda: stage_features(cfg, out), "features" in fresh, (out / "feats",))
    train = stages.run("train", lambda: stage_train(cfg, out), "train" in fresh, (out / "train",))
    stages.run("evaluate", lambda: stage_eval(cfg, out, train["checkpoint"]), "evaluate" in fresh,
               (out / "eval",))  # fmt: skip
    bc = stages.run("bc", lambda: stage_bc(cfg, out), "bc" in fresh, (out / "bc.pt",))
    stages.run("plan", lambda: stage_plan(cfg, out, train["checkpoint"], bc["checkpoint"]),
               "plan" in fresh, (out / "plan",))  # fmt: skip
    report = write_report(out, stages.done, cfg, wall=time.time() - t0)
    print(f"[demo] report: {report}")
    return report
