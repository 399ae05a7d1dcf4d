"""Human video -> webdataset shards (schema v1) with MediaPipe hand keypoints in the camera frame.

Usage:
    python -m data_prep.human_video --inputs VIDEOS/ --out shards/human --fps 10 --size '[224, 392]' \
        --segment_frames 100 --workers 2 [--model hand_landmarker.task] [--smooth_window 5]
    python -m data_prep.human_video --print_config      # every setting with its default

Inputs: video files (mp4, webm, mov, mkv, avi), GIFs, and folders of jpg/png frames (at
`--image_fps`), found recursively; what each setting does: dexwm.prep.human_video. Inputs that
cannot be decoded or show no hand are skipped with the reason in manifest.json; truncated inputs
keep what decoded and dropped segments are listed under manifest "notes". Re-running the command
resumes. `--segment-frames` (dashes) works as well as `--segment_frames`. `--crop center|hands|
letterbox` fits frames to `--size` (README, Data: which suits which footage); keypoints cropped out
of the stored frame are counted in the manifest.

Ends with one summary line (samples written, skipped by reason, keypoints off frame). Exit code: 0
written, 1 nothing written, 2 bad input (a missing path, an empty folder: one line naming it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from dexwm.prep.human_video import HumanVideoJob, run


def main(inputs: Path, out: Path, **settings) -> dict:
    """Python callers: the command with keyword settings (see HumanVideoJob); -> the manifest."""
    return run(HumanVideoJob(inputs=inputs, out=out, **settings))


def cli(argv: list[str] | None = None) -> int:
    """The command line (default: sys.argv) -> exit code; ends with a one-line summary."""
    from dexwm.config import command
    from dexwm.data.shards import summarize

    return command(HumanVideoJob, run, lambda job, manifest: summarize(manifest, job.out), argv)


if __name__ == "__main__":
    sys.exit(cli())
