"""Shard schema, version 1 (DESIGN.md s.7): the contract between data preparation and training.

One webdataset sample = one clip of one camera at a fixed size and frame rate. Arrays are stored as
`.npy`, metadata as `meta.json`; frames as `frames.mp4` (H.264) or `frames.npy` (uint8 T,H,W,3).
Hands are indexed (left, right); keypoints follow the MediaPipe / MANO order (wrist, thumb 1-4,
index 1-4, middle 1-4, ring 1-4, little 1-4). 3D points are in the camera frame, OpenCV convention
(x right, y down, z forward), metres. Pixel coordinates are continuous: pixel column i spans
[i, i+1), its centre is at i + 0.5 (so u = fx * x / z + cx with cx = W / 2 for a centred camera).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dexwm.keypoints import NUM_HANDS, NUM_KEYPOINTS

SCHEMA_VERSION = 1
EMBODIMENTS = ("human", "gripper", "allegro", "shadow", "panda_gripper")
# Embodiments whose keypoints are real hand points the hand-consistency head may learn; a parallel
# gripper's 20 dummy finger points are not (DexWM: no hand loss on DROID).
HEATMAP_EMBODIMENTS = ("human", "allegro", "shadow")

REQUIRED_ARRAYS = ("hands.npy", "hands_uv.npy", "hands_valid.npy", "camera.npy")
FRAME_KEYS = ("frames.mp4", "frames.npy")
REQUIRED_META = ("schema_version", "source", "embodiment", "fps", "size")


def in_frame(uv, size: tuple[int, int]):
    """Which keypoints lie inside a frame of `size` (height, width): uv (..., 2) pixels in the
    continuous convention -> bool (..., ): 0 <= u < W and 0 <= v < H (NaN: outside). Works on numpy
    arrays and torch tensors alike. A hand marked valid may still have points outside the stored
    frame (cropped away); every keypoint loss and score masks them with this."""
    H, W = int(size[0]), int(size[1])
    u, v = uv[..., 0], uv[..., 1]
    return (u >= 0) & (u < W) & (v >= 0) & (v < H)


class SchemaError(ValueError):
    """A sample that does not follow the shard schema; the message names the shard and field."""


def _where(sample: dict) -> str:
    url = sample.get("__url__", "?")
    return f"{url} sample {sample.get('__key__', '?')!r}"


def sample_length(sample: dict) -> int:
    """Number of frames T of a decoded sample (from hands.npy, present in every sample)."""
    return int(sample["hands.npy"].shape[0])


def validate_sample(sample: dict, *, need_frames: bool = False, need_feats: bool = False) -> None:
    """Check a decoded sample (npy arrays, json dict) against schema v1; raise SchemaError if not.

    Checks keys, dtypes, shapes, consistent T across arrays, and finite keypoints where a hand is
    marked valid. `need_frames` / `need_feats` demand the pixel or feature payload.
    """
    where = _where(sample)
    meta = sample.get("meta.json")
    if not isinstance(meta, dict):
        raise SchemaError(f"{where}: missing or unreadable meta.json")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"{where}: meta.json schema_version={version!r}, this code reads {SCHEMA_VERSION}"
        )
    for field in REQUIRED_META:
        if field not in meta:
            raise SchemaError(f"{where}: meta.json lacks field {field!r}")
    for key in REQUIRED_ARRAYS:
        if key not in sample:
            raise SchemaError(f"{where}: missing {key}")
    hands, uv, valid, cam = (sample[k] for k in REQUIRED_ARRAYS)
    T = hands.shape[0] if hands.ndim else 0
    expected = {
        "hands.npy": (hands, (T, NUM_HANDS, NUM_KEYPOINTS, 3)),
        "hands_uv.npy": (uv, (T, NUM_HANDS, NUM_KEYPOINTS, 2)),
        "hands_valid.npy": (valid, (T, NUM_HANDS)),
        "camera.npy": (cam, (T, 6)),
    }
    for key, (arr, shape) in expected.items():
        if not isinstance(arr, np.ndarray) or arr.shape != shape:
            got = getattr(arr, "shape", type(arr).__name__)
            raise SchemaError(f"{where}: {key} has shape {got}, expected {shape}")
    if T < 2:
        raise SchemaError(f"{where}: clip has {T} frames, need at least 2")
    if valid.dtype != np.bool_:
        raise SchemaError(f"{where}: hands_valid.npy dtype {valid.dtype}, expected bool")
    for key, arr in (("hands.npy", hands), ("hands_uv.npy", uv)):
        bad = ~np.isfinite(arr[valid]).all(axis=(-1, -2))
        if bad.any():
            frame, hand = np.argwhere(valid)[np.flatnonzero(bad)[0]]
            raise SchemaError(
                f"{where}: {key} has NaN/inf at frame {frame}, hand {hand} marked valid"
            )
    if not np.isfinite(cam).all():
        raise SchemaError(f"{where}: camera.npy has NaN/inf")
    has_frames = any(k in sample for k in FRAME_KEYS)
    if need_frames and not has_frames:
        raise SchemaError(f"{where}: no frames.mp4 or frames.npy")
    if "frames.npy" in sample and not isinstance(sample["frames.npy"], bytes):
        fr = sample["frames.npy"]
        if fr.dtype != np.uint8 or fr.ndim != 4 or fr.shape[0] != T or fr.shape[-1] != 3:
            raise SchemaError(
                f"{where}: frames.npy {fr.dtype} {fr.shape}, expected uint8 ({T},H,W,3)"
            )
    if need_feats and "feats.npy" not in sample:
        raise SchemaError(f"{where}: no feats.npy (run python -m data_prep.cache_features first)")
    if "feats.npy" in sample and "encoder" not in meta:
        raise SchemaError(f"{where}: feats.npy present but meta.json has no 'encoder' entry")
    if isinstance(sample.get("feats.npy"), np.ndarray):  # (still bytes: checked when decoded)
        f = sample["feats.npy"]
        if f.ndim != 3 or f.shape[0] != T:
            raise SchemaError(f"{where}: feats.npy shape {f.shape}, expected ({T}, N, D)")
        # (NaN/inf in features is checked on the frames a clip uses: a full scan costs too much)


def make_meta(
    *,
    source: str,
    embodiment: str,
    fps: float,
    size: tuple[int, int],
    intrinsics: list[list[float]] | None,
    licence: str,
    camera_valid: bool = False,
    **extra: Any,
) -> dict:
    """meta.json content for a new sample. `size` is (height, width) of the stored frames."""
    if embodiment not in EMBODIMENTS:
        raise ValueError(f"unknown embodiment {embodiment!r}; known: {EMBODIMENTS}")
    return dict(
        schema_version=SCHEMA_VERSION,
        source=source,
        embodiment=embodiment,
        fps=float(fps),
        size=[int(size[0]), int(size[1])],
        intrinsics=intrinsics,
        licence=licence,
        camera_valid=bool(camera_valid),
        **extra,
    )


def sample_key(source: str, episode: str, camera: str, segment: int | str) -> str:
    """`__key__` = {source}/{episode}/{camera}/{segment}. webdataset splits keys at the first dot
    of the file name, so dots are replaced."""
    parts = [str(p).replace(".", "_") for p in (source, episode, camera, segment)]
    return "/".join(parts)
