"""A small synthetic hand-motion dataset in the shard schema, for tests and smoke runs.

A drawn "hand" (a palm disk and five fingertip dots whose spread opens and closes) moves over a
textured background along a smooth random walk; its 21 keypoints are known exactly in a pinhole
camera, so the next frame is predictable from the current one plus the keypoint motion, and not
from the current frame alone. Real video files (H.264) through the real decoder, real shards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dexwm.data.schema import make_meta, sample_key
from dexwm.data.shards import run_shard_job
from dexwm.data.video import encode_mp4
from dexwm.keypoints import RIGHT

FOCAL, DEPTH = 160.0, 1.0


def _keypoints(center: np.ndarray, spread: float) -> np.ndarray:
    """Wrist at `center` (3,), fingers fanned upwards; spread in [0, 1]. -> (21, 3) metres."""
    kp = np.zeros((21, 3))
    kp[0] = center
    angles = np.deg2rad(np.linspace(-70, 70, 5)) * (0.4 + 0.6 * spread)
    for f, a in enumerate(angles):
        for j in range(4):
            r = 0.03 + 0.015 * (j + 1) * (0.5 + 0.5 * spread)
            kp[1 + 4 * f + j] = center + [r * np.sin(a), -r * np.cos(a), 0.0]
    return kp


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    bg = np.stack(
        [0.3 + 0.2 * xx, 0.3 + 0.2 * yy, 0.35 + 0.1 * np.sin(6 * xx) * np.cos(5 * yy)], -1
    )
    bg += rng.normal(0, 0.005, bg.shape)
    return bg


def render(kp_uv: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Draw palm + fingertips at pixel positions kp_uv (21, 2) on a copy of bg -> uint8 image."""
    img = bg.copy()
    H, W = img.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W]
    wrist = kp_uv[0]
    img[(xx - wrist[0]) ** 2 + (yy - wrist[1]) ** 2 <= 7**2] = (0.9, 0.7, 0.55)
    for f, tip in enumerate(kp_uv[[4, 8, 12, 16, 20]]):
        img[(xx - tip[0]) ** 2 + (yy - tip[1]) ** 2 <= 3**2] = (0.95, 0.3 + 0.12 * f, 0.2)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_episode(
    seed: int, T: int = 20, size: int = 128, fps: float = 10.0, fmt: str = "mp4"
) -> dict:
    rng = np.random.default_rng(seed)
    K = np.array([[FOCAL, 0, size / 2], [0, FOCAL, size / 2], [0, 0, 1]])
    half = 0.5 * size / FOCAL * DEPTH * 0.6  # keep the hand well inside the image
    pos = rng.uniform(-half, half, 2)
    vel = rng.normal(0, 0.02, 2)
    spread = rng.uniform(0, 1)
    hands = np.zeros((T, 2, 21, 3), np.float32)
    uv = np.zeros((T, 2, 21, 2), np.float32)
    bg = _background(size, rng)
    frames = np.zeros((T, size, size, 3), np.uint8)
    for t in range(T):
        kp = _keypoints(np.array([pos[0], pos[1] + 0.03, DEPTH]), spread)
        p = kp[:, :2] / kp[:, 2:] * FOCAL + size / 2
        hands[t, RIGHT], uv[t, RIGHT] = kp, p
        frames[t] = render(p, bg)
        vel = 0.8 * vel + rng.normal(0, 0.012, 2)
        pos = np.clip(pos + vel, -half, half)
        spread = float(np.clip(spread + rng.normal(0, 0.15), 0, 1))
    valid = np.zeros((T, 2), bool)
    valid[:, RIGHT] = True
    sample = {
        "__key__": sample_key("synthetic", f"ep{seed:05d}", "cam0", 0),
        "hands.npy": hands,
        "hands_uv.npy": uv,
        "hands_valid.npy": valid,
        "camera.npy": np.zeros((T, 6), np.float32),
        "meta.json": make_meta(
            source="synthetic",
            embodiment="human",
            fps=fps,
            size=(size, size),
            intrinsics=K.tolist(),
            licence="generated",
            camera_valid=True,
            seed=seed,
        ),  # fmt: skip
    }
    if fmt == "mp4":
        sample["frames.mp4"] = encode_mp4(frames, fps)
    else:
        sample["frames.npy"] = frames
    return sample


def _process(args: tuple) -> list[dict]:
    seed, T, size, fmt = args
    return [make_episode(seed, T=T, size=size, fmt=fmt)]


def write_synthetic(
    out_dir: str | Path, episodes: int = 32, T: int = 20, size: int = 128, fmt: str = "mp4",
    seed: int = 0, items_per_shard: int = 8, workers: int = 1, progress: bool = False,
) -> dict:  # fmt: skip
    """Write `episodes` synthetic clips as shards; returns the manifest."""
    items = [(f"ep{seed + i}", (seed + i, T, size, fmt)) for i in range(episodes)]
    config = dict(kind="synthetic", episodes=episodes, T=T, size=size, fmt=fmt, seed=seed)
    return run_shard_job(
        items, _process, out_dir, config=config, items_per_shard=items_per_shard,
        workers=workers, desc="synthetic episodes", progress=progress,
    )  # fmt: skip
