"""The main job on the built-in default: sim data -> features -> tiny model -> evaluation -> planning
-> one report. Each stage records its outputs and time in <out>/stages.json; a second run reuses
finished stages (and the stages themselves resume inside: shard jobs, training from last.ckpt).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dexwm.io import atomic_write_json

EMBODIMENTS = ("allegro", "shadow", "panda_gripper")
REPO = Path(__file__).resolve().parents[1]


@dataclass
class DemoConfig:
    out: str = "runs/demo"
    episodes: dict[str, int] = field(
        default_factory=lambda: {"allegro": 160, "shadow": 100, "panda_gripper": 100}
    )
    heldout: int = 24  # held-out episodes per embodiment (evaluation)
    frames: int = 40  # frames per episode, 10 Hz
    size: int = 128
    train_steps: int = 900
    batch_size: int = 32
    eval_horizon: int = 15  # steps of 0.2 s
    eval_clips: int = 96  # per held-out source
    probe_steps: int = 600  # keypoint probe and pixel decoder training (evaluation models)
    decoder_steps: int = 500
    plan_episodes: int = 3  # per task
    plan_samples: int = 64
    plan_iterations: int = 3
    plan_max_steps: int | None = None  # control steps per episode (None: the task's budget)
    workers: int = 2
    seed: int = 0
    quick: bool = False

    @classmethod
    def small(cls, out: str = "runs/demo_quick") -> DemoConfig:
        """A few minutes on 2 cores: the whole pipeline, every stage, tiny amounts (CI)."""
        return cls(
            out=out, episodes={"allegro": 16, "shadow": 8, "panda_gripper": 8}, heldout=4, frames=24,
            train_steps=40, batch_size=16, eval_horizon=6, eval_clips=8, probe_steps=30, decoder_steps=30,
            plan_episodes=1, workers=1,
            plan_samples=16, plan_iterations=2, plan_max_steps=6, quick=True,
        )  # fmt: skip


class Stages:
    """Runs named stages once; records {seconds, result} in stages.json (atomically)."""

    def __init__(self, out: Path) -> None:
        self.path = out / "stages.json"
        self.done: dict = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(self, name: str, fn: Callable[[], dict], fresh: bool = False) -> dict:
        if name in self.done and not fresh:
            print(f"[demo] {name}: done before ({self.done[name]['seconds']:.0f} s), reused")
            return self.done[name]["result"]
        print(f"[demo] {name} ...", flush=True)
        t0 = time.time()
        result = fn()
        self.done[name] = {"seconds": round(time.time() - t0, 1), "result": result}
        atomic_write_json(self.path, self.done)
        print(f"[demo] {name}: {self.done[name]['seconds']:.0f} s", flush=True)
        return result


def stage_sim(cfg: DemoConfig, out: Path) -> dict:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from data_prep.sim_episodes import main as sim_episodes

    result = {}
    # Each job renders in a fresh process: OpenGL contexts of several robots (and later imports)
    # never share one process, and the demo process itself never opens one.
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=1) as pool:
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
    from dexwm.data.feature_cache import cache_features
    from dexwm.models.encoders import FrozenEncoder
    from dexwm.training.module import WorldModelModule

    spec = WorldModelModule.from_config(str(REPO / "configs/model/tiny.yaml")).wm.encoder_spec
    result = {}
    for split in ("train", "heldout"):
        for emb in EMBODIMENTS:
            src, dst = out / "shards" / split / emb, out / "feats" / split / emb
            man = cache_features(str(src), dst, spec.to_dict(), FrozenEncoder, workers=cfg.workers)
            result[f"{split}/{emb}"] = {"folder": str(dst), **man["counts"]}
    return result


def train_args(cfg: DemoConfig, out: Path) -> list[str]:
    train = [{"paths": [str(out / "feats/train" / e)], "name": e} for e in EMBODIMENTS]
    val = [{"paths": [str(out / "feats/heldout" / e)], "name": e} for e in EMBODIMENTS]
    every = max(10, cfg.train_steps // 4)
    return [
        "fit", "--config", str(REPO / "configs/model/tiny.yaml"), "--config", str(REPO / "configs/train/tiny.yaml"),
        "--data.train", json.dumps(train), "--data.val", json.dumps(val),
        "--data.batch_size", str(cfg.batch_size), "--data.epoch_batches", str(every),
        "--trainer.max_steps", str(cfg.train_steps), "--trainer.val_check_interval", str(every),
        "--trainer.limit_val_batches", "4", "--checkpoint.every_n_train_steps", str(every),
        "--trainer.default_root_dir", str(out / "train"), "--ckpt_path", "last",
    ]  # fmt: skip


def stage_train(cfg: DemoConfig, out: Path) -> dict:
    import torch

    from dexwm.training.cli import WorldModelCLI

    ckpt = out / "train" / "checkpoints" / "last.ckpt"
    done = ckpt.exists() and torch.load(ckpt, weights_only=True)["global_step"] >= cfg.train_steps
    if not done:
        WorldModelCLI(args=train_args(cfg, out))
    logs = sorted((out / "train" / "logs").glob("version_*/metrics.csv"))
    return {"checkpoint": str(ckpt), "metrics": [str(p) for p in logs], "steps": cfg.train_steps}


def stage_eval(cfg: DemoConfig, out: Path, ckpt: str) -> dict:
    from dexwm.evaluation.pixel_decoder import DecoderConfig
    from dexwm.evaluation.probe import ProbeConfig
    from dexwm.evaluation.runner import run_eval

    data = [{"paths": [str(out / "feats/heldout" / e)], "name": e} for e in EMBODIMENTS]
    res = run_eval(
        checkpoint=ckpt, data=data, out_dir=str(out / "eval"), horizon=cfg.eval_horizon,
        max_clips=cfg.eval_clips, progress=True, probe=ProbeConfig(steps=cfg.probe_steps),
        decoder=DecoderConfig(steps=cfg.decoder_steps),
    )  # fmt: skip
    return {"folder": str(out / "eval"), "results": str(out / "eval" / "results.json"),
            "seconds_inside": res.get("seconds")}  # fmt: skip


def stage_plan(cfg: DemoConfig, out: Path, ckpt: str) -> dict:
    from dexwm.control import MPCPolicy
    from dexwm.control.baselines import OraclePolicy, RandomPolicy
    from dexwm.control.episodes import evaluate
    from dexwm.planning import CEM

    planner = CEM(samples=cfg.plan_samples, elites=max(2, cfg.plan_samples // 8),
                  iterations=cfg.plan_iterations)  # fmt: skip
    policies = [  # the search settings of configs/plan/default.yaml
        MPCPolicy(planner, name="cem", horizon=3, execute=2, std_arm=0.08, std_hand=0.1,
                  max_step_arm=0.15, max_step_hand=0.3),  # fmt: skip
        RandomPolicy(),
        OraclePolicy(),
    ]  # fmt: skip
    res = evaluate(
        policies, episodes=cfg.plan_episodes, checkpoint=ckpt, out=out / "plan", workers=1,
        threads=max(1, os.cpu_count() or 1), max_steps=cfg.plan_max_steps, resume=True,
    )  # fmt: skip
    return {"folder": str(out / "plan"), "summary": res["summary"]}


def run_demo(cfg: DemoConfig, fresh: list[str] | None = None) -> Path:
    """Run every stage (reusing finished ones unless named in `fresh`); returns the report path."""
    from demo_report import write_report

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "demo_config.json", asdict(cfg))
    stages = Stages(out)
    fresh = set(fresh or [])
    t0 = time.time()
    stages.run("sim data", lambda: stage_sim(cfg, out), "sim data" in fresh)
    stages.run("features", lambda: stage_features(cfg, out), "features" in fresh)
    train = stages.run("train", lambda: stage_train(cfg, out), "train" in fresh)
    stages.run("evaluate", lambda: stage_eval(cfg, out, train["checkpoint"]), "evaluate" in fresh)
    stages.run("plan", lambda: stage_plan(cfg, out, train["checkpoint"]), "plan" in fresh)
    report = write_report(out, stages.done, cfg, wall=time.time() - t0)
    print(f"[demo] report: {report}")
    return report
