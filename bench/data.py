"""Data pipeline throughput on this machine; prints and writes bench/results/data.json.

Usage:
    python bench/data.py [--frames 150] [--out bench/results/data.json]

Measured: hand extraction (decode + MediaPipe on every frame; and the whole human-video preparation
of one input: decode, MediaPipe, PnP, resize, H.264 encode), shard writing (run_shard_job:
tar parts, packing, sha256, manifest) in MB/s, and the feature-cache encoder's frames/s. Uses the
real dex-retargeting hand video from ../shared/data when present, else a generated clip without
hands (MediaPipe then runs only its palm detector, so frames/s is optimistic; the JSON says
which). Each measurement is one function
returning a dict; `main` merges their results into the JSON, keeping keys written by other
benchmarks (e.g. loader clips/s).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from dexwm.data.shards import run_shard_job
from dexwm.data.video import decode_video, encode_mp4
from dexwm.io import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEO = REPO.parent / "shared/data/human_video/dex_retargeting_hand/human_hand_video.mp4"


def bench_video(frames: int, workdir: Path) -> tuple[Path, str]:
    """The real hand video if present, else a generated 1280x720 clip without hands."""
    if SHARED_VIDEO.exists():
        return SHARED_VIDEO, "dex_retargeting_hand (1280x720, one hand in every frame)"
    rng = np.random.default_rng(0)
    clip = np.repeat(rng.integers(0, 255, (1, 720, 1280, 3), dtype=np.uint8), frames, axis=0)
    path = workdir / "generated.mp4"
    path.write_bytes(encode_mp4(clip, 30))
    return path, "generated noise clip 1280x720 (no hands: palm detector only)"


def _decode_and_detect(video: Path, n: int, hw: tuple[int, int], fps: float) -> dict:
    from dexwm.prep.hands import HandDetector

    t0 = time.perf_counter()
    x = decode_video(video, np.arange(n), hw)  # (n, h, w, 3)
    t_decode = time.perf_counter() - t0
    det = HandDetector()
    det.detect(x[:1])  # graph start-up, not counted
    det.reset()
    t0 = time.perf_counter()
    track = det.detect(x, fps)
    t_detect = time.perf_counter() - t0
    det.close()
    return {
        "detect_size": list(hw),
        "hands_found_per_frame": round(float(track.valid.sum() / n), 3),
        "decode_fps": round(n / t_decode, 1),
        "mediapipe_fps": round(n / t_detect, 1),
        "decode_plus_mediapipe_fps": round(n / (t_decode + t_detect), 1),
    }


def bench_hand_extraction(
    frames: int = 150, detect_sides: tuple[int, ...] = (1280, 960, 640)
) -> dict:
    """frames/s of decode + MediaPipe (both hands, tracking mode) at each detection size (long
    side), and of the full per-input preparation (data_prep.human_video.process_video: every
    frame, default detection size, PnP, 224x392 H.264 output, start-up included)."""
    from dexwm.prep.human_video import HumanVideoConfig, detection_size, process_video
    from dexwm.prep.video_inputs import open_clip

    with tempfile.TemporaryDirectory() as tmp:
        video, what = bench_video(frames, Path(tmp))
        clip = open_clip(video)
        n = min(frames, clip.n)
        res = {"video": what, "frames": n}
        for side in detect_sides:
            hw = detection_size(clip.size, side)
            res[f"detect_{side}"] = _decode_and_detect(video, n, hw, clip.fps)
        short = Path(tmp) / "short.mp4"
        short.write_bytes(encode_mp4(decode_video(video, np.arange(n)), clip.fps))
        cfg = HumanVideoConfig(fps=None, segment_frames=0)  # default detection size
        t0 = time.perf_counter()
        try:
            process_video((str(short), "short", "short", cfg))
        except Exception:  # no hands in a generated clip: the time up to the skip still counts
            pass
        res["full_preparation_fps"] = round(n / (time.perf_counter() - t0), 1)
    return res


def _toy_sample(i: int, T: int = 64, size: tuple[int, int] = (224, 392)) -> dict:
    from dexwm.data.schema import make_meta, sample_key

    rng = np.random.default_rng(i)
    return {
        "__key__": sample_key("bench", f"ep{i}", "cam0", 0),
        "frames.npy": rng.integers(0, 255, (T, *size, 3), dtype=np.uint8),
        "hands.npy": rng.normal(size=(T, 2, 21, 3)).astype(np.float32),
        "hands_uv.npy": rng.normal(size=(T, 2, 21, 2)).astype(np.float32),
        "hands_valid.npy": np.ones((T, 2), bool),
        "camera.npy": np.zeros((T, 6), np.float32),
        "meta.json": make_meta(
            source="bench", embodiment="human", fps=10, size=size, intrinsics=None, licence="none"
        ),
    }


def _toy_process(i: int) -> list[dict]:
    return [_toy_sample(i)]


def bench_shard_writing(samples: int = 24, items_per_shard: int = 8) -> dict:
    """MB/s of run_shard_job writing raw-frame samples (64 x 224 x 392 uint8 each, ~17 MB): tar
    part per item, packing into shards, sha256, manifest. Sample generation is timed apart and
    subtracted."""
    t0 = time.perf_counter()
    for i in range(samples):
        _toy_sample(i)
    t_make = time.perf_counter() - t0
    tmp = Path(tempfile.mkdtemp())
    try:
        t0 = time.perf_counter()
        man = run_shard_job(
            [(str(i), i) for i in range(samples)],
            _toy_process,
            tmp,
            config={},
            items_per_shard=items_per_shard,
            progress=False,
        )
        t_job = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mb = sum(s["bytes"] for s in man["shards"]) / 1e6
    return {
        "samples": samples,
        "shards": len(man["shards"]),
        "megabytes": round(mb, 1),
        "shard_write_MBps": round(mb / max(t_job - t_make, 1e-9), 1),
        "including_sample_generation_MBps": round(mb / t_job, 1),
    }


def bench_mp4_encoding(frames: int = 128, size: tuple[int, int] = (224, 392)) -> dict:
    """frames/s of H.264 encoding (dexwm.data.video.encode_mp4, crf 18) of stored frames."""
    x = np.random.default_rng(0).integers(0, 255, (frames, *size, 3), dtype=np.uint8)
    x[:] = x[:1]  # a static frame: closer to real footage than per-frame noise
    t0 = time.perf_counter()
    encode_mp4(x, 10)
    return {
        "frames": frames,
        "size": list(size),
        "encode_fps": round(frames / (time.perf_counter() - t0), 1),
    }


def _loader_sample(i: int, T: int, hw: tuple[int, int], tokens: int, dim: int, fmt: str) -> dict:
    """A clip with smooth moving content (H.264-friendly), keypoints, and random cached features."""
    from dexwm.data.synthetic import make_episode

    base = make_episode(i, T=T, size=max(hw), fmt="npy")
    frames = base.pop("frames.npy")[:, : hw[0], : hw[1]]
    base["meta.json"]["size"] = list(hw)
    if fmt == "frames":
        base["frames.mp4"] = encode_mp4(np.ascontiguousarray(frames), 10.0)
    else:
        rng = np.random.default_rng(i)
        base["feats.npy"] = rng.normal(size=(T, tokens, dim)).astype(np.float16)
        base["meta.json"]["encoder"] = {"name": "bench", "checksum": "0", "input_size": list(hw)}
    return base


def _loader_process(args: tuple) -> list[dict]:
    return [_loader_sample(*args)]


def bench_loader(clips: int = 200, samples: int = 16) -> dict:
    """Loader clips/s (webdataset read, decode, validation, clip sampling, actions, batching) for
    raw-frame (H.264) and cached-feature shards, at the tiny clip size (4 frames of 128x128, 16x320
    features) and DexWM's (9 frames of 224x392, 448x1024 features), with 1 and 2 workers."""
    from dexwm.data.clips import ClipConfig
    from dexwm.data.loader import DataSource, make_loader

    sizes = {
        "tiny": dict(frames=4, hw=(128, 128), tokens=16, dim=320),
        "paper": dict(frames=9, hw=(224, 392), tokens=448, dim=1024),
    }
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size, c in sizes.items():
            for fmt in ("frames", "feats"):
                root = Path(tmp) / f"{size}-{fmt}"
                items = [
                    (str(i), (i, 40, c["hw"], c["tokens"], c["dim"], fmt)) for i in range(samples)
                ]
                run_shard_job(
                    items, _loader_process, root, config={}, items_per_shard=4, progress=False
                )
                for workers in (1, 2):
                    cfg = ClipConfig(
                        num_frames=c["frames"], mode="window", window_s=4.0, clips_per_sample=4
                    )
                    loader = make_loader([DataSource([str(root)])], cfg, batch_size=8, num_workers=workers,
                                         resampled=True, shuffle=16)  # fmt: skip
                    it = iter(loader)
                    next(it)  # worker start-up and first shard
                    n, t0 = 0, time.perf_counter()
                    while n < clips:
                        n += next(it)["actions"].shape[0]
                    rate = n / (time.perf_counter() - t0)
                    out[f"{size}_{fmt}_workers{workers}_clips_per_s"] = round(rate, 1)
                    del it, loader
    ts = REPO / "bench" / "results" / "train_step.json"
    if ts.exists():
        need = json.loads(ts.read_text())["cached_features"]["clips_per_s"]
        out["tiny_training_consumes_clips_per_s"] = round(need, 1)
        out["tiny_feats_loader_over_training"] = round(
            out["tiny_feats_workers1_clips_per_s"] / need, 1
        )
    return out


def bench_feature_encoder(frames: int = 256, batch: int = 32) -> dict:
    """Feature-cache encoder frames/s (encode_frames: uint8 -> float16 features) with the tiny
    preset's encoder (stride-16 stage of tf_efficientnet_lite0 at 128 px) as FrozenEncoder runs it
    (the blocks after the tapped stage dropped) and as timm's feature network runs it (every
    block); the features are identical."""
    import torch

    from dexwm.config import load
    from dexwm.data.feature_cache import encode_frames
    from dexwm.models.encoders import FrozenEncoder, _build_timm
    from dexwm.training.module import WorldModelModule

    spec = load(WorldModelModule, REPO / "configs/model/tiny.yaml", section="model").wm.encoder_spec
    enc = FrozenEncoder(spec)
    full = FrozenEncoder(spec)
    full.backbone = _build_timm(spec, spec.name.split(":", 1)[1], False)[0].eval()
    x = np.random.default_rng(0).integers(0, 255, (frames, *spec.input_size, 3), dtype=np.uint8)
    out: dict = {"frames": frames, "threads": torch.get_num_threads(), "blocks_run": {}}
    feats = {}
    for name, e in (("pruned", enc), ("all_blocks", full)):
        encode_frames(e, x[:batch], batch)  # warm-up
        t0 = time.perf_counter()
        feats[name] = encode_frames(e, x, batch)
        out[f"{name}_frames_per_s"] = round(frames / (time.perf_counter() - t0), 1)
        out["blocks_run"][name] = len(e.backbone.blocks)
    out["identical_features"] = bool(np.array_equal(feats["pruned"], feats["all_blocks"]))
    out["speedup"] = round(out["pruned_frames_per_s"] / out["all_blocks_frames_per_s"], 2)
    return out


def main(
    frames: int = 150,
    out: Path = REPO / "bench" / "results" / "data.json",
    only: list[str] | None = None,
) -> dict:
    """Run the data benchmarks (or `only` some of: hand_extraction, mp4_encoding, shard_writing,
    loader, feature_encoder), print them, merge them into `out`."""
    runs = {
        "hand_extraction": lambda: bench_hand_extraction(frames),
        "mp4_encoding": bench_mp4_encoding,
        "shard_writing": bench_shard_writing,
        "loader": bench_loader,
        "feature_encoder": bench_feature_encoder,
    }
    results = {name: fn() for name, fn in runs.items() if not only or name in only}
    env = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other processes share the CPU
        "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    for name, r in results.items():
        print(f"{name}: {json.dumps(r)}")
    out = Path(out)
    old = json.loads(out.read_text()) if out.exists() else {}
    atomic_write_json(out, {**old, **results, "env_data_prep": env})
    print(f"written {out}")
    return results


if __name__ == "__main__":
    from jsonargparse import CLI

    CLI(main, as_positional=False)
