"""Per-sample transform: a decoded shard sample -> training clips. Pure functions, testable alone.

A clip is `num_frames` frames of one sample (context frames + target), chosen either DexWM's way
(sorted random frames within a time window, so gaps are irregular) or at a fixed frame gap. Actions
are computed here, at load time, from the keypoints (+ camera) of exactly the frames picked.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
import torch

from dexwm.data.actions import keypoint_actions, keypoint_actions_static
from dexwm.data.schema import HEATMAP_EMBODIMENTS, SchemaError, in_frame, sample_length
from dexwm.data.video import decode_video


@dataclass
class ClipConfig:
    num_frames: int = 4  # context frames + 1 target
    mode: str = (
        "window"  # "window": random sorted frames within window_s (DexWM); "fixed": every `gap`
    )
    window_s: float = 4.0
    gap: int = 1
    clips_per_sample: int = 1
    features: str = "auto"  # "auto": feats.npy when present else frames; "feats"; "frames"
    with_frames: bool = False  # also return frames when features are used (visualisation)
    augment: bool = False  # photometric augmentation of frames (same for all frames of a clip)

    def __post_init__(self) -> None:
        if self.mode not in ("window", "fixed"):
            raise ValueError(f"clip mode {self.mode!r}: use 'window' or 'fixed'")
        if self.features not in ("auto", "feats", "frames"):
            raise ValueError(f"features {self.features!r}: use 'auto', 'feats' or 'frames'")
        if self.num_frames < 2:
            raise ValueError("a clip needs at least 2 frames (context + target)")


def sample_indices(
    T: int, fps: float, cfg: ClipConfig, rng: np.random.Generator
) -> np.ndarray | None:
    """Frame indices (num_frames,) sorted ascending, or None if the sample is too short."""
    n = cfg.num_frames
    if cfg.mode == "fixed":
        span = (n - 1) * cfg.gap
        if span >= T:
            return None
        start = int(rng.integers(0, T - span))
        return start + cfg.gap * np.arange(n)
    window = min(T, max(n, int(round(cfg.window_s * fps)) + 1))  # frames in the window
    if window < n:
        return None
    start = int(rng.integers(0, T - window + 1))
    return start + np.sort(rng.choice(window, size=n, replace=False))


def _frames(sample: dict, idx: np.ndarray) -> np.ndarray:
    if "frames.npy" in sample:
        return np.ascontiguousarray(sample["frames.npy"][idx])
    return decode_video(sample["frames.mp4"], idx)


def augment_frames(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter (brightness, contrast, saturation +-40%) and grayscale (p=0.2), as DexWM's
    training augmentation, applied identically to every frame of a clip (T, H, W, 3) uint8.
    Photometric only: keypoint pixels stay valid."""
    x = frames.astype(np.float32)
    b, c, s = rng.uniform(0.6, 1.4, 3)
    x = x * b
    x = (x - x.mean()) * c + x.mean()
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)  # (T, H, W)
    x = gray[..., None] + (x - gray[..., None]) * (0.0 if rng.random() < 0.2 else s)
    return np.clip(x, 0, 255).astype(np.uint8)


HEAVY_KEYS = ("feats.npy", "frames.npy")  # decoded only for clips a process actually builds


def plan_clips(sample: dict, cfg: ClipConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Frame indices of up to `clips_per_sample` clips of a sample (needs only meta + hands)."""
    T, fps = sample_length(sample), float(sample["meta.json"]["fps"])
    plans = []
    for _ in range(cfg.clips_per_sample):
        idx = sample_indices(T, fps, cfg, rng)
        if idx is None:
            break
        plans.append(idx)
    return plans


def build_clip(sample: dict, idx: np.ndarray, cfg: ClipConfig, rng: np.random.Generator) -> dict:
    """One clip at frame indices `idx` of a validated, decoded sample:
    feats (T, N, D) float32 raw encoder features or frames (T, H, W, 3) uint8; actions (T-1, A) raw;
    dt (T-1,) seconds; hands_uv (T, 2, 21, 2) stored-frame pixels; hands_visible (T, 2) bool (hands
    that the heatmap loss may supervise); keypoints_visible (T, 2, 21) bool (those hands' points
    inside the stored frame: what the hand loss, the probe and PCK may use); frame_hw (2,); key,
    embodiment, indices (, encoder)."""
    meta = sample["meta.json"]
    fps = float(meta["fps"])
    use_feats = cfg.features == "feats" or (cfg.features == "auto" and "feats.npy" in sample)
    valid = sample["hands_valid.npy"][idx]  # (T, 2)
    camera = sample["camera.npy"][idx]
    if meta.get("camera_valid", False) and camera.any():  # moving camera: first frame's camera
        t = torch.from_numpy
        actions = keypoint_actions(t(sample["hands.npy"][idx]), t(valid), t(camera)).numpy()
    else:
        actions = keypoint_actions_static(sample["hands.npy"][idx], valid)
    uv = sample["hands_uv.npy"][idx].astype(np.float32)  # (T, 2, 21, 2)
    visible = valid & (meta["embodiment"] in HEATMAP_EMBODIMENTS)  # (T, 2)
    clip = {
        "actions": actions,
        "dt": (np.diff(idx) / fps).astype(np.float32),
        "hands_uv": uv,
        "hands_visible": visible,
        "keypoints_visible": visible[..., None] & in_frame(uv, meta["size"][:2]),  # (T, 2, 21)
        "frame_hw": np.asarray(meta["size"][:2], dtype=np.int64),
        "indices": idx.astype(np.int64),
        "key": sample["__key__"],
        "embodiment": meta["embodiment"],
    }
    if use_feats:
        clip["feats"] = sample["feats.npy"][idx].astype(np.float32)
        if not np.isfinite(clip["feats"]).all():
            where = f"{sample.get('__url__', '?')} sample {sample['__key__']!r}"
            raise SchemaError(f"{where}: feats.npy has NaN/inf")
        clip["encoder"] = meta["encoder"]
    if not use_feats or cfg.with_frames:
        clip["frames"] = _frames(sample, idx)
        if cfg.augment and not use_feats:
            clip["frames"] = augment_frames(clip["frames"], rng)
    return clip


def make_clips(sample: dict, cfg: ClipConfig, rng: np.random.Generator) -> list[dict]:
    """Validated, decoded sample -> up to `clips_per_sample` clips (see `build_clip`)."""
    return [build_clip(sample, idx, cfg, rng) for idx in plan_clips(sample, cfg, rng)]


def decode_sample(sample: dict, heavy: bool = True) -> dict:
    """Raw tar members (bytes) -> arrays (.npy) and dicts (.json), in place; video stays bytes.
    heavy=False leaves HEAVY_KEYS as bytes (decode them later with heavy=True)."""
    for k, v in sample.items():
        if not isinstance(v, bytes) or (not heavy and k in HEAVY_KEYS):
            continue
        if k.endswith(".npy"):
            sample[k] = np.load(io.BytesIO(v), allow_pickle=False)
        elif k.endswith(".json"):
            sample[k] = json.loads(v)
    return sample


def collate_clips(clips: list[dict]) -> dict:
    """List of clips -> batch: arrays stacked into tensors (B, ...), other values into lists."""
    out = {}
    for k, v in clips[0].items():
        if isinstance(v, np.ndarray):
            out[k] = torch.from_numpy(np.stack([c[k] for c in clips]))
        else:
            out[k] = [c[k] for c in clips]
    return out
