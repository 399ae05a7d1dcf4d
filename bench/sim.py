"""Simulation speed on this machine; prints and writes bench/results/sim.json.

Usage:
    python bench/sim.py [--episodes 4] [--gen_episodes 8] [--out bench/results/sim.json]

Measured:
- episode frames/s of the Allegro rig (exploration program: IK + 50 physics steps + 1 render per
  frame) at 128 and 224 px, physics alone, and the two stand-in embodiments at 128 px;
- batched forward kinematics: 1536 = 512 samples x horizon 3 joint configurations -> 21 camera-
  frame keypoints, forward and forward + backward;
- time to generate 1,000 exploration episodes of 50 frames as shards (simulate, render 128 px,
  H.264, write): measured on fewer episodes, extrapolated (the JSON says from how many), for one
  process and for the CLI with 2 workers.
The machine is shared: the 1-minute load average at the start is recorded with the results.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")  # Mesa llvmpipe: 1 thread is faster here (s.6)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dexwm.io import atomic_write_json  # noqa: E402
from dexwm.sim.explore import Explorer  # noqa: E402
from dexwm.sim.kinematics import KeypointFK, single_thread  # noqa: E402
from dexwm.sim.rig import Rig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FRAMES = 50


def episode_fps(embodiment: str, size: int, episodes: int, render: bool = True) -> dict:
    explorer = Explorer(Rig(embodiment, size=size))
    explorer.run(10_000, frames=5, render=render)  # warm-up: renderer, IK caches
    times = []
    for i in range(episodes):
        t0 = time.perf_counter()
        explorer.run(i, frames=FRAMES, render=render)
        times.append(time.perf_counter() - t0)
    explorer.rig.close()
    return {
        "frames_per_s": round(episodes * FRAMES / sum(times), 1),
        "best_episode_frames_per_s": round(FRAMES / min(times), 1),  # least disturbed by load
        "episodes": episodes,
        "frames_per_episode": FRAMES,
    }


def fk_speed(n: int = 1536, repeats: int = 30) -> dict:
    rig = Rig("allegro")
    fk = KeypointFK(rig.model, rig.info, rig.camera)
    lo, hi = rig.joint_limits.T
    q = torch.tensor(np.random.default_rng(0).uniform(lo, hi, (n, len(lo))), dtype=torch.float32)
    fk(q)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fk(q)
        times.append(time.perf_counter() - t0)
    qg = q.clone().requires_grad_(True)
    back = []
    for _ in range(repeats // 3):
        t0 = time.perf_counter()
        with single_thread():  # as documented for gradient-based planners
            fk(qg).square().sum().backward()
        back.append(time.perf_counter() - t0)
    ms = float(np.median(times)) * 1e3
    return {
        "configurations": n,
        "ms_per_batch": round(ms, 2),
        "configurations_per_s": round(n / ms * 1e3),
        "ms_forward_backward": round(float(np.median(back)) * 1e3, 2),
        "dtype": "float32",
        "note": "one intra-op thread (dexwm.sim.kinematics.single_thread): forward does it "
        "itself, the backward pass is wrapped here",
    }


def generation_time(episodes: int) -> dict:
    """Per-episode cost of full shard samples in one process, and the real CLI with 2 workers."""
    from data_prep.sim_episodes import main

    explorer = Explorer(Rig("allegro", size=128))
    explorer.sample(10_000, frames=5)
    t0 = time.perf_counter()
    for i in range(episodes):
        explorer.sample(i, frames=FRAMES)
    per_episode = (time.perf_counter() - t0) / episodes
    cli = {}
    for n in (2, episodes):  # two job sizes separate the workers' start-up from the per-episode
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            main("allegro", Path(tmp), episodes=n, frames=FRAMES, workers=2, progress=False)
            cli[n] = time.perf_counter() - t0
    cli_per_episode = (cli[episodes] - cli[2]) / (episodes - 2)
    startup = max(cli[2] - 2 * cli_per_episode, 0.0)
    return {
        "measured_episodes": episodes,
        "extrapolated": True,
        "one_process_s_per_episode": round(per_episode, 3),
        "one_process_s_for_1000": round(1000 * per_episode),
        "cli_2_workers_s_measured": {str(n): round(t, 1) for n, t in cli.items()},
        "cli_2_workers_s_per_episode": round(cli_per_episode, 3),
        "cli_2_workers_startup_s": round(startup, 1),
        "cli_2_workers_s_for_1000": round(startup + 1000 * cli_per_episode),
        "note": f"1,000 x {FRAMES}-frame episodes, 128 px, H.264, shards; extrapolated linearly "
        f"from jobs of 2 and {episodes} episodes",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--gen_episodes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/sim.json")
    args = parser.parse_args()
    results = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "mujoco_gl": os.environ.get("MUJOCO_GL"),
            "lp_num_threads": os.environ.get("LP_NUM_THREADS"),
        },
        "episode_frames_per_s": {
            "allegro_128": episode_fps("allegro", 128, args.episodes),
            "allegro_224": episode_fps("allegro", 224, args.episodes),
            "allegro_physics_only": episode_fps("allegro", 128, args.episodes, render=False),
            "shadow_128": episode_fps("shadow", 128, args.episodes),
            "panda_gripper_128": episode_fps("panda_gripper", 128, args.episodes),
        },
        "batched_fk": fk_speed(),
        "generate_1000_episodes": generation_time(args.gen_episodes),
    }
    print(json.dumps(results, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
