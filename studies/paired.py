"""Per-clip open-loop errors on the held-out clips, and paired z between methods.

`run_eval` reports per-step means; comparing two checkpoints clip by clip needs each clip's error.
`clip_errors` rolls a checkpoint out on exactly the clips `run_eval` picks (same source, seed,
context, horizon, clips per sample), with the library's own pieces (`eval_clips`, the baselines'
`Batch` / `rollout` / `copy_last`, `feature_errors`), and returns the feature MAE per clip and step
in RAW encoder features: the one space every arm shares (each checkpoint normalises features with
the statistics of its own training data, so normalised errors of two arms are not comparable).
"""

from __future__ import annotations

import math

import torch

from dexwm.data.clips import collate_clips
from dexwm.data.loader import DataSource, expand_paths, source_from
from dexwm.evaluation import baselines as bl
from dexwm.evaluation.data import SourceReport, eval_clips, source_name
from dexwm.evaluation.metrics import feature_errors
from dexwm.models.world_model import WorldModel


def clip_errors(
    checkpoint: str,
    source: DataSource | dict,
    horizon: int,
    step_s: float = 0.2,
    clips_per_sample: int = 1,
    max_clips: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> dict:
    """-> {"clips": ["key|start", ...], "model": [[H floats] per clip], "copy_last": [...]}: raw
    feature MAE per clip and rollout step of the checkpoint (true actions) and of copy-last."""
    torch.manual_seed(seed)
    source = source_from(source)
    wm = WorldModel.from_checkpoint(checkpoint)
    C = wm.pred_cfg.max_frames
    rep = SourceReport(source_name(source), expand_paths(source.paths))
    enc = wm.checkpoint_info["encoder"]
    out: dict[str, list] = {"clips": [], "model": [], "copy_last": []}

    def run(clips: list[dict]) -> None:
        batch = collate_clips(clips)
        raw = batch["feats"]  # (B, C+H, N, D) cached features
        b = bl.Batch(raw, wm.normalize_feats(raw), batch["actions"], batch["dt"], C)
        true = raw[:, C:]  # (B, H, N, D)
        for name, pred in (("model", bl.rollout(wm, b)), ("copy_last", bl.copy_last(b))):
            out[name] += feature_errors(bl.to_raw(wm, pred), true)["feat_mae"].tolist()  # (B, H)
        out["clips"] += [f"{c['key']}|{int(c['indices'][0])}" for c in clips]

    pending: list[dict] = []
    for clip in eval_clips(source, rep, C, horizon, step_s, enc, clips_per_sample, max_clips, seed):
        clip.pop("frames", None)
        pending.append(clip)
        if len(pending) == batch_size:
            run(pending)
            pending = []
    if pending:
        run(pending)
    return out


def paired_z(better: list[list[float]], worse: list[list[float]]) -> dict:
    """Per step: mean of (worse - better) over the same clips, its standard error and z = mean / se
    (z > 0: `better` has the lower error; None where se is 0). Inputs: (clips, H) nested lists."""
    a, b = torch.tensor(better, dtype=torch.float64), torch.tensor(worse, dtype=torch.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"need the same >= 2 clips on both sides, got {a.shape} and {b.shape}")
    d = b - a  # (n, H)
    mean, se = d.mean(0), d.std(0, unbiased=True) / math.sqrt(d.shape[0])
    z = [None if s == 0 else float(m / s) for m, s in zip(mean, se)]
    return {"clips": d.shape[0], "diff": mean.tolist(), "se": se.tolist(), "z": z}
