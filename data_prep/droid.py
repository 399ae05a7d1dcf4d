"""DROID-format robot episodes -> webdataset shards (schema v1), one sample per camera (and segment).

Usage:
    python -m data_prep.droid --root ../shared/data/robot/droid_subset --out shards/droid --workers 2 \
        [--cameras '[0, 1]'] [--extrinsics cams.json] [--size '[192, 320]'] [--segment_frames 0]
    python -m data_prep.droid --print_config      # every setting with its default

The gripper becomes DexWM's right "hand"; keypoints stay in the robot base frame unless
`--extrinsics` gives the camera poses (dexwm.prep.droid_shards says how). Episodes with the raw
15 Hz arrays and exports that carry only video-rate `states` / `joints` are both read
(dexwm.prep.droid); each sample's meta.json records the annotation's fields and where every array
came from. Episodes whose videos and annotations disagree in length are trimmed (manifest
"notes"); unusable ones are skipped with the reason. Re-running the command resumes.

Ends with one summary line (samples written, skipped by reason). Exit code: 0 written, 1 nothing
written, 2 bad input (no such root, not a DROID-format folder, no such split: one line naming it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from dexwm.prep.droid_shards import DroidJob, run


def main(root: Path, out: Path, **settings) -> dict:
    """Python callers: the command with keyword settings (see DroidJob); -> the manifest."""
    return run(DroidJob(root=root, out=out, **settings))


def cli(argv: list[str] | None = None) -> int:
    """The command line (default: sys.argv) -> exit code; ends with a one-line summary."""
    from dexwm.config import command
    from dexwm.data.shards import summarize

    return command(DroidJob, run, lambda job, manifest: summarize(manifest, job.out), argv)


if __name__ == "__main__":
    sys.exit(cli())
