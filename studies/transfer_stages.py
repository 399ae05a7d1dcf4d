"""One arm of the transfer study (`cfg`: a StudyConfig whose config paths are resolved): train, evaluate (run_eval + per-clip errors), plan. Each function
is one stage of `studies.transfer.Study.run_arm` and returns the record kept in stages.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dexwm.io import atomic_write_json


def train_arm(
    cfg,
    sources: list[dict],
    val: dict,
    folder: Path,
    init: str | None = None,
    stats_from: list[str] | None = None,
    seed: int | None = None,
) -> dict:
    """`train.py fit` on the arm's sources with the study's preset, steps and seed (resumes from
    last.ckpt); init: a checkpoint to start from (fine-tuning); stats_from: the source names the
    normalisation statistics are fitted on; seed: the training seed (None: the study's)."""
    import torch

    from dexwm.training.cli import fit

    ckpt = folder / "checkpoints" / "last.ckpt"
    done = ckpt.exists() and torch.load(ckpt, weights_only=True)["global_step"] >= cfg.train_steps
    every = max(10, cfg.train_steps // 4)
    if not done:
        fit([
            "--config", cfg.model, "--config", cfg.train,
            "--data.train", json.dumps(sources), "--data.val", json.dumps([val]),
            "--data.batch_size", str(cfg.batch_size), "--data.epoch_batches", str(every),
            "--trainer.max_steps", str(cfg.train_steps), "--trainer.val_check_interval", str(every),
            "--trainer.limit_val_batches", "4", "--checkpoint.every_n_train_steps", str(every),
            "--trainer.default_root_dir", str(folder), "--ckpt_path", "last",
            "--seed_everything", str(cfg.seed if seed is None else seed),
            *(["--model.init_from", init] if init else []),
            *(["--data.stats_sources", json.dumps(stats_from)] if stats_from else []),
        ])  # fmt: skip
    return {"checkpoint": str(ckpt), "steps": cfg.train_steps}


def _series(method: dict, key: str = "feat_mae_raw") -> dict:
    return {"mean": method.get(key), "se": method.get(f"{key}_se")}


def _pck_mean(method: dict) -> dict:
    """PCK per threshold, averaged over the steps with visible keypoints."""
    out = {}
    for t, vals in (method.get("pck") or {}).items():
        vals = [v for v in vals if v is not None]
        out[t] = sum(vals) / len(vals) if vals else None
    return out


def evaluate_arm(
    cfg, checkpoint: str, heldout: dict, probe: dict, study: Path, folder: Path
) -> dict:
    """`run_eval` on the held-out Allegro clips (copy-last and shuffled-action baselines, PCK of the
    study's shared keypoint probe), then the per-clip errors of the same clips for paired z."""
    from dexwm.evaluation import run_eval
    from studies.paired import clip_errors

    overrides = dict(
        checkpoint=checkpoint, data=[heldout], out_dir=str(folder), train_data=[probe],
        cache_dir=str(study / "eval_cache"), horizon=cfg.eval_horizon, max_clips=cfg.eval_clips,
        clips_per_sample=cfg.clips_per_sample, baselines=["copy_last", "shuffled_actions"],
        vis_clips=0, seed=cfg.seed, progress=False,
    )  # fmt: skip
    if cfg.probe_steps is not None:
        overrides["probe"] = {"steps": cfg.probe_steps}
    res = run_eval(cfg.eval, **overrides)
    group = res["groups"][f"dataset:{heldout['name']}"]
    methods = group["methods"]
    errors = clip_errors(
        checkpoint, heldout, cfg.eval_horizon, res["protocol"]["step_s"], cfg.clips_per_sample,
        cfg.eval_clips, cfg.seed,
    )  # fmt: skip
    atomic_write_json(folder / "clip_errors.json", errors)
    # the per-clip errors are run_eval's clips: their means match its raw feature MAE per step
    n = len(errors["model"])
    mean = [sum(c[s] for c in errors["model"]) / n for s in range(cfg.eval_horizon)]
    mismatch = max(abs(a - b) for a, b in zip(mean, methods["model"]["feat_mae_raw"]))
    return {
        "results": str(folder / "results.json"),
        "clip_errors": str(folder / "clip_errors.json"),
        "clips": group["clips"],
        "error": {m: _series(r) for m, r in methods.items() if "feat_mae_raw" in r},
        "pck": {m: _pck_mean(r) for m, r in methods.items() if r.get("pck")},
        "checks": res["checks"].get(f"dataset:{heldout['name']}", {}),
        "clip_errors_vs_run_eval": mismatch,
        "notes": res["notes"],
    }


def plan_arm(cfg, checkpoint: str, folder: Path) -> dict:
    """The plan config's policies (MPC through the model alone) on the Allegro tasks (resumable)."""
    from dexwm.config import load
    from dexwm.control import evaluate

    extra = {} if cfg.plan_tasks is None else {"tasks": cfg.plan_tasks}
    run = load(
        evaluate, cfg.plan, episodes=cfg.plan_episodes, max_steps=cfg.plan_max_steps,
        out=str(folder), workers=cfg.workers, threads=max(1, (os.cpu_count() or 1) // cfg.workers),
        resume=True, checkpoint=checkpoint, video=cfg.plan_video, **extra,
    )  # fmt: skip
    res = evaluate(**run)
    return {"policy": run["policies"][0].name, "summary": res["summary"], "folder": str(folder)}
