"""Training speed of a model preset on this CPU: steps/s and clips/s with cached features and with the
frozen encoder run on frames, FLOPs per step, and the fraction of the measured matmul peak.

Usage:
    python bench/train_step.py [--preset configs/model/tiny.yaml] [--batch 32] [--steps 20]
        [--out bench/results/train_step.json]

Data: synthetic shards written to a temporary folder (128x128 H.264 clips, cached features); the
loader runs as in training (webdataset, decode, clip sampling, actions). Timings exclude the first
(warm-up) steps.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from dexwm.config import load
from dexwm.data.clips import ClipConfig
from dexwm.data.feature_cache import cache_features
from dexwm.data.loader import DataSource, make_loader
from dexwm.data.stats import compute_stats
from dexwm.data.synthetic import write_synthetic
from dexwm.io import atomic_write_json
from dexwm.models.encoders import FrozenEncoder
from dexwm.training.module import WorldModelModule


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """Measured fp32 matmul GFLOP/s with the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def step_fn(module: WorldModelModule, opt: torch.optim.Optimizer):
    def step(batch: dict) -> float:
        losses = module.compute_losses(batch)
        total = module.weighted_total(losses)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return total.detach().item()

    return step


def measure(module, loader, steps: int, warmup: int = 3) -> dict:
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    step = step_fn(module, opt)
    it = iter(loader)
    for _ in range(warmup):
        step(next(it))
    data_s = model_s = 0.0
    clips = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        step(batch)
        data_s += t1 - t
        model_s += time.perf_counter() - t1
        clips += batch["actions"].shape[0]
    wall = time.perf_counter() - t0
    with FlopCounterMode(display=False) as fc:
        step(next(it))
    flops = fc.get_total_flops()
    return {
        "steps_per_s": steps / wall,
        "clips_per_s": clips / wall,
        "seconds_per_step": wall / steps,
        "model_seconds_per_step": model_s / steps,
        "data_wait_seconds_per_step": data_s / steps,
        "flops_per_step": flops,
        "achieved_gflops": flops / (model_s / steps) / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="configs/model/tiny.yaml")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="bench/results/train_step.json")
    args = ap.parse_args()

    torch.manual_seed(0)
    module = load(WorldModelModule, args.preset, section="model")
    spec = module.wm.encoder_spec
    import yaml

    clip_cfg = (yaml.safe_load(Path(args.preset).read_text()).get("data") or {}).get("clip", {})
    n_frames = clip_cfg.get("num_frames", module.wm.pred_cfg.max_frames + 1)
    with tempfile.TemporaryDirectory() as tmp:
        raw, feats = Path(tmp) / "raw", Path(tmp) / "feats"
        write_synthetic(raw, episodes=32, T=20, size=max(spec.input_size), items_per_shard=8)
        cache_features(str(raw), feats, spec.to_dict(), FrozenEncoder, progress=False)
        results: dict = {
            "preset": args.preset,
            "batch": args.batch,
            "clip_frames": n_frames,
            "threads": torch.get_num_threads(),
            "load_avg_1min": os.getloadavg()[0],
            "params_M": sum(p.numel() for p in module.wm.parameters()) / 1e6,
            "matmul_peak_gflops": matmul_peak(),
        }
        cfg = ClipConfig(num_frames=n_frames, mode="window", window_s=1.0, features="feats")
        stats = compute_stats([DataSource([str(feats)])], cfg, 200, progress=False)
        module.wm.action_norm.set_stats(
            torch.tensor(stats["action_mean"]), torch.tensor(stats["action_std"])
        )
        module.wm.feat_norm.set_stats(
            torch.tensor(stats["feat_mean"]), torch.tensor(stats["feat_std"])
        )
        for name, root, mode in (
            ("cached_features", feats, "feats"),
            ("encoder_on_frames", raw, "frames"),
        ):
            loader = make_loader(
                [DataSource([str(root)])], ClipConfig(num_frames=n_frames, mode="window", window_s=1.0, features=mode),
                batch_size=args.batch, num_workers=args.workers, resampled=True, shuffle=64,
            )  # fmt: skip
            r = measure(module.train(), loader, args.steps)
            r["fraction_of_matmul_peak"] = r["achieved_gflops"] / results["matmul_peak_gflops"]
            results[name] = r
    print(json.dumps(results, indent=1))
    atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
