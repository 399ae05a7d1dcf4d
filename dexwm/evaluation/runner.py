"""`run_eval`: the DexWM prediction protocol in one call (what eval.py and the demo run).

1. load the checkpoint (+ `compare` checkpoints, e.g. ablations) and check every encoder matches;
2. train or load from cache the keypoint probe and the pixel decoder on held-in shards;
3. for every clip of the held-out sources: context C frames, then an open-loop rollout of H steps
   with the true actions, and the baselines, on the same clips;
4. per horizon step: feature MAE / MSE / cosine (normalised AND raw feature space) and PCK of the
   probe on predicted features, per dataset, per embodiment and overall;
5. write results.json, results.md, plots and rollout pictures into `out_dir`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from dexwm.data.clips import collate_clips
from dexwm.data.loader import DataSource, expand_paths, source_from
from dexwm.evaluation import baselines as bl
from dexwm.evaluation import report
from dexwm.evaluation.cache import cache_path, load_module, save_module
from dexwm.evaluation.config import EvalConfig, eval_config
from dexwm.evaluation.data import (
    SourceReport,
    check_encoder,
    collect_frames,
    eval_clips,
    keypoints_in_input,
    plan_source,
    shard_fingerprint,
    source_name,
)
from dexwm.evaluation.metrics import Accumulator, feature_errors, pck_counts
from dexwm.evaluation.metrics import scaled_thresholds as scale_px
from dexwm.evaluation.pixel_decoder import PixelDecoder, output_size, train_decoder
from dexwm.evaluation.probe import (
    KeypointProbe,
    probe_config_dict,
    resolve,
    train_probe,
)
from dexwm.models.world_model import WorldModel


def _urls(sources: list[DataSource]) -> set[str]:
    return {u for s in sources for u in expand_paths(s.paths)}


def _train_sources(cfg: EvalConfig, wm: WorldModel, notes: list[str]) -> list[DataSource]:
    """Held-in shards for the probe and the decoder: `train_data`, else the checkpoint's
    data.train. States (in `notes`) where evaluation shards are not held out."""
    ckpt_train = ((wm.checkpoint_info.get("config") or {}).get("data") or {}).get("train") or []
    ckpt_train = [source_from(s) for s in ckpt_train]
    try:
        model_urls = _urls(ckpt_train)
    except (FileNotFoundError, ValueError) as e:
        model_urls = set()
        notes.append(f"the checkpoint's training shards cannot be read ({e}); held-out not checked")
    train = [source_from(s) for s in cfg.train_data] if cfg.train_data is not None else ckpt_train
    if cfg.train_data is None and not model_urls:
        train = []
    eval_urls = _urls(cfg.data)
    for what, urls in (("the model", model_urls), ("the probe / decoder", _urls(train))):
        if eval_urls & urls:
            msg = f"NOT HELD OUT: {len(eval_urls & urls)} evaluation shard(s) also trained {what}"
            warnings.warn(msg, stacklevel=3)
            notes.append(msg)
    return train


def _load_compare(cfg: EvalConfig, wm: WorldModel) -> dict[str, WorldModel]:
    others = {}
    for name, path in cfg.compare.items():
        other = WorldModel.from_checkpoint(path)
        try:
            check_encoder(wm.checkpoint_info["encoder"], other.checkpoint_info["encoder"], path)
        except ValueError as e:
            raise ValueError(f"compare model {name!r} was trained on another encoder: {e}") from e
        others[name] = other
    return others


def _cached(kind, key, cache_dir, cls, train_fn, notes):
    path = cache_path(cache_dir, kind, key)
    if path.exists():
        return load_module(path, cls)
    module, summary = train_fn()
    save_module(path, module, key, summary)
    notes.append(f"{kind} trained in {summary['seconds']} s and cached at {path}")
    return module, dict(summary, cached=str(path))


def build_probe_and_decoder(cfg: EvalConfig, wm: WorldModel, train: list[DataSource], notes):
    """-> (probe or None, probe summary, decoder or None, decoder summary)."""
    enc = wm.checkpoint_info["encoder"]
    input_size = tuple(wm.encoder_spec.input_size)
    D, grid = wm.shape["dim"], tuple(wm.shape["grid"])
    cache_dir = Path(cfg.cache_dir or Path(cfg.out_dir) / "cache")
    urls = sorted(_urls(train))
    base = {"encoder": enc, "input_size": input_size, "shards": shard_fingerprint(urls)}
    probe = decoder = None
    probe_info: dict = {}
    decoder_info: dict = {}
    encode = lambda f: wm.encoder(f)  # noqa: E731  raw features of frames without a cache

    if cfg.pck is not False:
        head = resolve(cfg.probe, wm.hand_cfg)
        key = dict(base, kind="probe", probe=probe_config_dict(head, cfg.probe), seed=cfg.seed)
        try:
            if not urls:
                raise ValueError("no training shards given (train_data) or in the checkpoint")

            def fit():
                data = collect_frames(train, input_size, enc, encode, cfg.probe.max_frames)
                return train_probe(
                    data, D, grid, input_size, head, cfg.probe, cfg.seed, cfg.progress
                )

            probe, probe_info = _cached("probe", key, cache_dir, KeypointProbe, fit, notes)
        except ValueError as e:
            if cfg.pck:
                raise ValueError(
                    f"PCK asked for, but the keypoint probe cannot be trained: {e}"
                ) from e
            notes.append(f"PCK skipped everywhere: the keypoint probe cannot be trained: {e}")
    if cfg.decoder.enabled and cfg.vis_clips > 0:
        size = output_size(cfg.decoder, input_size)
        key = dict(base, kind="decoder", decoder=asdict(cfg.decoder), size=size, seed=cfg.seed)
        try:
            if not urls:
                raise ValueError("no training shards")

            def fit():
                data = collect_frames(train, input_size, enc, encode, cfg.decoder.max_frames,
                                      keypoints=False, pixels_size=size)  # fmt: skip
                return train_decoder(data, D, grid, cfg.decoder, cfg.seed, cfg.progress)

            decoder, decoder_info = _cached("decoder", key, cache_dir, PixelDecoder, fit, notes)
        except (ValueError, KeyError) as e:
            notes.append(f"pixel decoder skipped (pictures show true frames only): {e}")
    return probe, probe_info, decoder, decoder_info


class _Evaluator:
    """Runs every method on batches of clips and accumulates the metrics."""

    def __init__(self, cfg, wm, others, probe, context, thresholds):
        self.cfg, self.wm, self.others, self.probe, self.C = cfg, wm, others, probe, context
        self.acc = Accumulator(cfg.horizon, thresholds)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.donor: torch.Tensor | None = None
        self.skipped_shuffle = 0
        self.vis: list[dict] = []
        self.members: dict[str, list[str]] = {}

    def methods(self, b: bl.Batch) -> dict[str, torch.Tensor]:
        wm, fut = self.wm, b.future_actions
        out = {"model": bl.rollout(wm, b)}
        for name in self.cfg.baselines:
            if name == "copy_last":
                out[name] = bl.copy_last(b)
            elif name == "zero_actions":
                out[name] = bl.rollout(wm, b, bl.zero_actions(fut))
            elif name == "shuffled_actions":
                acts = bl.shuffled_actions(fut, self.gen, self.donor)
                if acts is None:
                    self.skipped_shuffle += fut.shape[0]
                else:
                    out[name] = bl.rollout(wm, b, acts)
            else:
                raise ValueError(f"unknown baseline {name!r}; known: {bl.BASELINES}")
        self.donor = fut[0]
        for name, other in self.others.items():
            out[name] = bl.compare_rollout(wm, other, b)
        return out

    def __call__(self, clips: list[dict]) -> None:
        wm, C = self.wm, self.C
        frames = [c.pop("frames", None) for c in clips]
        batch = collate_clips(clips)
        raw = batch["feats"] if "feats" in batch else self._encode(frames)  # (B, C+H, N, D)
        b = bl.Batch(raw, wm.normalize_feats(raw), batch["actions"], batch["dt"], C)
        groups = [[f"dataset:{c['source']}", f"embodiment:{c['embodiment']}", "all"] for c in clips]
        for c, gs in zip(clips, groups):
            for g in gs:
                self.members.setdefault(g, []).append(f"{c['source']}|{c['key']}|{c['indices'][0]}")
        self.acc.count_clips(groups)
        preds = self.methods(b)
        true_raw = raw[:, C:]
        ref = None
        for name, pred in preds.items():
            errs = feature_errors(pred, b.truth)
            errs_raw = feature_errors(bl.to_raw(wm, pred), true_raw)
            errs.update({f"{k}_raw": v for k, v in errs_raw.items()})
            if name == "model":
                ref = errs
            self.acc.add_features(groups, name, errs, None if name == "model" else ref)
        kp = self._keypoints(batch) if self.probe is not None else None
        pred_uv = None
        if kp is not None:
            uv, vis = kp
            pred_uv = {"probe_on_truth": self.probe.keypoints(true_raw)}
            for name, pred in preds.items():
                if name == "copy_last":  # one frame, repeated
                    last = self.probe.keypoints(raw[:, C - 1])  # (B, 12, 2)
                    pred_uv[name] = last[:, None].expand(-1, self.cfg.horizon, -1, -1)
                else:
                    pred_uv[name] = self.probe.keypoints(bl.to_raw(wm, pred))
            for name, p in pred_uv.items():
                self.acc.add_pck(groups, name, *pck_counts(p, uv, vis, self.acc.thresholds_px))
        self._keep_for_pictures(clips, frames, b, preds, kp, pred_uv)

    def _encode(self, frames):
        return torch.stack([self.wm.encoder(torch.from_numpy(f)) for f in frames])

    def _keypoints(self, batch):
        """True probe keypoints of the future frames in encoder-input pixels (B, H, 12, 2) and their
        visibility (B, H, 12); None when no future keypoint is visible in this batch."""
        C, size = self.C, tuple(self.wm.encoder_spec.input_size)
        uv = torch.zeros(*batch["hands_uv"][:, C:].shape[:2], 12, 2)
        vis = torch.zeros(*uv.shape[:-1], dtype=torch.bool)
        visible = batch.get("keypoints_visible", batch["hands_visible"])  # per keypoint
        for i, hw in enumerate(batch["frame_hw"].tolist()):
            uv[i], vis[i] = keypoints_in_input(batch["hands_uv"][i, C:], visible[i, C:], hw, size)
        return (uv, vis) if vis.any() else None

    def _keep_for_pictures(self, clips, frames, b, preds, kp, pred_uv):
        for i, c in enumerate(clips):
            if frames[i] is None or len(self.vis) >= self.cfg.vis_clips:
                continue
            shown = ("model", "shuffled_actions", "copy_last")
            keep = {k: preds[k][i] for k in shown if k in preds}
            self.vis.append({
                "key": c["key"], "source": c["source"], "frames": frames[i], "context": self.C,
                "start": int(c["indices"][0]),
                "raw": b.raw[i], "pred_raw": {k: bl.to_raw(self.wm, v) for k, v in keep.items()},
                "uv": None if kp is None else kp[0][i], "visible": None if kp is None else kp[1][i],
                "pred_uv": None if pred_uv is None else pred_uv["model"][i],
            })  # fmt: skip


def run_eval(cfg: EvalConfig | str | Path | list | None = None, **overrides) -> dict:
    """Evaluate; returns the results dict that is also written to <out_dir>/results.json.
    `cfg`: an EvalConfig, or YAML path(s) (e.g. configs/eval/tiny.yaml) that `overrides` (plain
    values / dicts, e.g. checkpoint=..., data=[{"paths": [...]}], probe={"steps": 50}) update."""
    cfg = eval_config(cfg, **overrides)
    if not cfg.data:
        raise ValueError("data: give at least one held-out source")
    if cfg.horizon < 1 or cfg.step_s <= 0:
        raise ValueError(
            f"horizon={cfg.horizon}, step_s={cfg.step_s}: need horizon >= 1, step_s > 0"
        )
    t0 = time.time()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    wm = WorldModel.from_checkpoint(cfg.checkpoint)
    C = cfg.context or wm.pred_cfg.max_frames
    if C < 1:
        raise ValueError(f"context={C}: need at least one context frame")
    others = _load_compare(cfg, wm)
    notes: list[str] = []
    train = _train_sources(cfg, wm, notes)
    plans, enc = {}, wm.checkpoint_info["encoder"]
    for src in cfg.data:
        name = source_name(src)
        if name in plans:
            raise ValueError(f"two evaluation sources named {name!r}: give them distinct names")
        plans[name] = plan_source(
            src, C + cfg.horizon, cfg.step_s, cfg.clips_per_sample, cfg.max_clips, enc
        )
        if plans[name]["clips"] == 0:
            raise ValueError(_no_clips_message(name, plans[name], C, cfg))
    probe, probe_info, decoder, decoder_info = build_probe_and_decoder(cfg, wm, train, notes)
    input_size = tuple(wm.encoder_spec.input_size)
    thresholds = scale_px(cfg.pck_px, input_size)
    ev = _Evaluator(cfg, wm, others, probe, C, thresholds)
    sources: dict[str, SourceReport] = {}
    total = sum(p["clips"] for p in plans.values())
    with tqdm(total=total, desc="eval clips", unit="clip", disable=not cfg.progress) as bar:
        for src in cfg.data:
            name = source_name(src)
            rep = sources[name] = SourceReport(name, expand_paths(src.paths))
            pending: list[dict] = []
            frames_for = -(-cfg.vis_clips // len(cfg.data)) if cfg.vis_clips else 0
            for clip in eval_clips(src, rep, C, cfg.horizon, cfg.step_s, wm.checkpoint_info["encoder"],
                                   cfg.clips_per_sample, cfg.max_clips, cfg.seed, frames_for):  # fmt: skip
                pending.append(clip)
                if len(pending) == cfg.batch_size:
                    ev(pending)
                    bar.update(len(pending))
                    pending = []
            if pending:
                ev(pending)
                bar.update(len(pending))
            if rep.too_short:
                notes.append(
                    f"{name}: {len(rep.too_short)} of {rep.samples} samples skipped, shorter than "
                    f"context {C} + horizon {cfg.horizon} needs ({rep.too_short[0]['needed']} frames)"
                )
    if ev.skipped_shuffle:
        notes.append(
            f"shuffled_actions: {ev.skipped_shuffle} clip(s) had no other clip to borrow from"
        )
    results = report.assemble(
        cfg, wm, ev, sources, notes, probe_info, decoder_info, thresholds, C, time.time() - t0
    )
    report.write_all(results, out, ev.vis, decoder, cfg)
    return results


def _no_clips_message(name: str, plan: dict, C: int, cfg: EvalConfig) -> str:
    need = ", ".join(f"{n} frames at {fps}" for fps, n in plan["needed"].items()) or "?"
    return (
        f"source {name!r}: no clip: context {C} + horizon {cfg.horizon} steps of {cfg.step_s} s "
        f"need {need}; the longest of its {plan['samples']} samples has {plan['longest']} frames. "
        "Lower horizon / context / step_s, or prepare longer episodes."
    )
