"""Evaluation data: open-loop clips of held-out shards, and frames of held-in shards.

`eval_clips` reads one source sample by sample, so the frame gap can follow each sample's frame
rate (gap = round(step_s * fps)) and every sample too short for context + horizon is counted with
its length. `collect_frames` gathers single frames (raw features, keypoints, pixels) to train the
keypoint probe and the pixel decoder. Cached features must come from the model's encoder.
"""

from __future__ import annotations

import io
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dexwm.data.clips import ClipConfig, make_clips
from dexwm.data.loader import DataSource, expand_paths
from dexwm.data.schema import HEATMAP_EMBODIMENTS, in_frame, validate_sample
from dexwm.data.stages import shard_samples
from dexwm.data.video import decode_video
from dexwm.models.encoders import crop_params, transform_uv
from dexwm.models.hand_head import heatmap_targets


def source_name(source: DataSource) -> str:
    """A source's name, or the base name of its first path."""
    if source.name:
        return source.name
    p = Path(str(source.paths[0]).rstrip("/"))
    return p.stem if p.suffix == ".tar" else p.name


def _samples(urls: list[str], decode: bool = True) -> Iterator[dict]:
    yield from shard_samples(urls, decode)  # checked against the manifest: truncation raises


def check_encoder(model_enc: dict, data_enc: dict | None, where: str) -> None:
    """Cached features (meta `encoder`) must come from the encoder the model was trained on."""
    if data_enc is None:
        return
    same = data_enc.get("name") == model_enc.get("name") and list(
        data_enc.get("input_size", [])
    ) == list(model_enc.get("input_size", []))
    a, b = data_enc.get("checksum"), model_enc.get("checksum")
    if not same or (a and b and a != b):
        raise ValueError(
            f"{where}: cached features come from encoder {data_enc.get('name')} at "
            f"{data_enc.get('input_size')} (weights {a}), the checkpoint was trained on "
            f"{model_enc.get('name')} at {model_enc.get('input_size')} (weights {b}). Re-cache the "
            "shards with the model's encoder (python -m data_prep.cache_features) or evaluate on "
            "shards without feats.npy (the encoder then runs on the frames)."
        )


@dataclass
class SourceReport:
    """What one evaluation source gave: counts, gaps and every sample that was skipped."""

    name: str
    shards: list[str]
    samples: int = 0
    clips: int = 0
    gaps: dict = field(default_factory=dict)  # "fps -> gap (frames), step (s)"
    too_short: list[dict] = field(default_factory=list)
    longest: int = 0
    visible_keypoints: int = 0  # keypoints visible in the truth, over all future steps
    embodiments: set = field(default_factory=set)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["embodiments"] = sorted(self.embodiments)
        return d


def eval_clips(
    source: DataSource,
    report: SourceReport,
    context: int,
    horizon: int,
    step_s: float,
    model_encoder: dict,
    clips_per_sample: int = 1,
    max_clips: int | None = None,
    seed: int = 0,
    frames_for: int = 0,
) -> Iterator[dict]:
    """Clips of context + horizon frames at a gap of ~step_s seconds (one gap per sample's fps).
    Clip starts are random but seeded by (seed, sample key). The first `frames_for` clips also carry
    their frames (for pictures). Yields clips as `dexwm.data.clips.make_clips` does, plus `source`."""
    n = context + horizon
    for sample in _samples(report.shards):
        if not sample:
            continue
        validate_sample(sample)
        meta, key = sample["meta.json"], sample["__key__"]
        fps = float(meta["fps"])
        gap = max(1, round(step_s * fps))
        report.gaps[f"{fps:g}"] = {"gap_frames": gap, "step_s": gap / fps}
        T = int(sample["hands.npy"].shape[0])
        report.samples += 1
        report.longest = max(report.longest, T)
        need = (n - 1) * gap + 1
        if T < need:
            report.too_short.append({"key": key, "frames": T, "needed": need})
            continue
        if "feats.npy" in sample:
            check_encoder(model_encoder, meta.get("encoder"), f"{report.shards[0]} sample {key!r}")
        cfg = ClipConfig(
            num_frames=n,
            mode="fixed",
            gap=gap,
            clips_per_sample=clips_per_sample,
            with_frames=report.clips < frames_for,
        )
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        seen = set()
        for clip in make_clips(sample, cfg, rng):
            if int(clip["indices"][0]) in seen:  # random starts may repeat: keep distinct clips
                continue
            seen.add(int(clip["indices"][0]))
            clip["source"] = report.name
            report.embodiments.add(clip["embodiment"])
            report.clips += 1
            yield clip
            if max_clips is not None and report.clips >= max_clips:
                return


def crop_frames(frames: torch.Tensor, input_size: tuple[int, int], out_size: tuple[int, int]):
    """uint8 (B, H, W, 3) -> float (B, 3, h, w) in [0, 1]: the encoder's resize-to-cover and centre
    crop to `input_size`, then resized to `out_size` (what a pixel decoder should reproduce)."""
    x = frames.permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)
    s, left, top = crop_params(input_size, tuple(x.shape[-2:]))
    rh, rw = round(x.shape[-2] * s), round(x.shape[-1] * s)
    if (rh, rw) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
    x = x[..., top : top + input_size[0], left : left + input_size[1]]
    if tuple(x.shape[-2:]) != tuple(out_size):
        x = F.interpolate(x, size=out_size, mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1)


def keypoints_in_input(
    hands_uv: torch.Tensor,
    hands_visible: torch.Tensor,
    frame_hw: tuple[int, int],
    input_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stored-frame keypoints (..., 2, 21, 2) + visible hands (..., 2) -> the 12 probe points in
    encoder-input pixels (..., 12, 2) and their visibility (..., 12): hand visible, point inside the
    stored frame (a valid hand may be partly cropped away) and inside the encoder input. Both the
    probe's training data and PCK's truth come from here."""
    vis = hands_visible.bool()
    if vis.shape != hands_uv.shape[:-1]:  # per hand -> per keypoint
        vis = vis[..., None].expand(hands_uv.shape[:-1])
    vis = vis & in_frame(hands_uv, frame_hw)  # (..., 2, 21)
    uv = transform_uv(hands_uv.float(), tuple(input_size), tuple(frame_hw))
    return heatmap_targets(uv, vis, tuple(input_size))


def _lengths(urls: list[str], model_encoder: dict | None = None) -> list[tuple[int, float]]:
    """(frames, fps) per sample, without decoding the payloads; with `model_encoder`, cached
    features are checked against it."""
    out = []
    for s in _samples(urls, decode=False):
        if "hands_valid.npy" in s and "meta.json" in s:
            meta = json.loads(s["meta.json"])
            if model_encoder is not None and "feats.npy" in s:
                check_encoder(
                    model_encoder, meta.get("encoder"), f"{s['__url__']} {s['__key__']!r}"
                )
            T = int(np.load(io.BytesIO(s["hands_valid.npy"])).shape[0])
            out.append((T, float(meta.get("fps", 0) or 0)))
    return out


def plan_source(
    source: DataSource,
    frames: int,
    step_s: float,
    per_sample: int,
    max_clips: int | None,
    model_encoder: dict,
) -> dict:
    """Before reading payloads: samples, the most clips `eval_clips` can give (clips of `frames`
    frames at a gap of ~step_s), the longest sample and the frames a clip needs per frame rate.
    Raises if cached features come from another encoder than the model's."""
    n, longest, need = 0, 0, {}
    lengths = _lengths(expand_paths(source.paths), model_encoder)
    for T, fps in lengths:
        gap = max(1, round(step_s * fps))
        need[f"{fps:g} fps"] = (frames - 1) * gap + 1
        n += per_sample * (T >= (frames - 1) * gap + 1)
        longest = max(longest, T)
    clips = n if max_clips is None else min(n, max_clips)
    return {"samples": len(lengths), "clips": clips, "longest": longest, "needed": need}


def collect_frames(
    sources: list[DataSource],
    input_size: tuple[int, int],
    model_encoder: dict,
    encode=None,
    max_frames: int = 20000,
    keypoints: bool = True,
    pixels_size: tuple[int, int] | None = None,
) -> dict:
    """Frames spread evenly over all samples of `sources` (at most `max_frames`), as
    feats (M, N, D) float16 RAW encoder features, uv (M, 12, 2) encoder-input pixels, visible
    (M, 12), sample (M,) sample index, and with `pixels_size` pixels (M, h, w, 3) uint8.
    keypoints=True keeps only frames with at least one visible probe keypoint. `encode(frames
    uint8) -> raw feats` is used for samples without cached features."""
    urls = [u for s in sources for u in expand_paths(s.paths)]
    total = sum(T for T, _ in _lengths(urls))
    stride = max(1, -(-total // max_frames))
    out: dict[str, list] = {"feats": [], "uv": [], "visible": [], "sample": [], "pixels": []}
    for i, sample in enumerate(_samples(urls)):
        if not sample:
            continue
        validate_sample(sample)
        meta = sample["meta.json"]
        T = int(sample["hands.npy"].shape[0])
        idx = np.arange((i * 7) % stride, T, stride)  # vary the phase between samples
        if len(idx) == 0:
            continue
        vis_hands = torch.from_numpy(sample["hands_valid.npy"][idx]) & (
            meta["embodiment"] in HEATMAP_EMBODIMENTS
        )
        uv, vis = keypoints_in_input(
            torch.from_numpy(sample["hands_uv.npy"][idx]), vis_hands, meta["size"][:2], input_size
        )  # (t, 12, 2), (t, 12)
        keep = vis.any(-1).numpy() if keypoints else np.ones(len(idx), bool)
        if not keep.any():
            continue
        idx, uv, vis = idx[keep], uv[keep], vis[keep]
        frames = None
        if pixels_size is not None or "feats.npy" not in sample:
            frames = torch.from_numpy(
                np.ascontiguousarray(sample["frames.npy"][idx])
                if "frames.npy" in sample
                else decode_video(sample["frames.mp4"], idx)
            )
        if "feats.npy" in sample:
            check_encoder(model_encoder, meta.get("encoder"), f"sample {sample['__key__']!r}")
            feats = torch.from_numpy(sample["feats.npy"][idx])
        else:
            if encode is None:
                raise ValueError(f"sample {sample['__key__']!r} has no feats.npy and no encoder")
            feats = encode(frames)
        out["feats"].append(feats.to(torch.float16))
        out["uv"].append(uv.nan_to_num(0.0))
        out["visible"].append(vis)
        out["sample"].append(torch.full((len(idx),), i))
        if pixels_size is not None:
            px = crop_frames(frames, input_size, pixels_size)  # (t, 3, h, w)
            out["pixels"].append((px * 255).round().to(torch.uint8).permute(0, 2, 3, 1))
    if not out["feats"]:
        what = "frames with visible hand keypoints" if keypoints else "frames"
        raise ValueError(f"no {what} in {urls}")
    res = {k: torch.cat(v) for k, v in out.items() if v}
    res["shards"] = urls
    return res


def shard_fingerprint(urls: list[str]) -> list:
    """(path, size, mtime) of local shards: identifies training data for the probe/decoder cache."""
    fp = []
    for u in urls:
        if os.path.exists(u):
            st = os.stat(u)
            fp.append([os.path.abspath(u), st.st_size, int(st.st_mtime)])
        else:
            fp.append([u])
    return fp


def describe_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
