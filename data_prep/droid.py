"""DROID-format robot episodes -> webdataset shards (schema v1), one sample per camera (and segment).

Usage:
    python -m data_prep.droid --root ../shared/data/robot/droid_subset --out shards/droid --workers 2 \
        [--cameras '[0, 1]'] [--extrinsics cams.json] [--size '[192, 320]'] [--segment_frames 0]
    python -m data_prep.droid --print_config      # every setting with its default

The gripper becomes DexWM's right "hand"; keypoints stay in the robot base frame unless
`--extrinsics` gives the camera poses (dexwm.prep.droid_shards says how). Episodes whose videos
and annotations disagree in length are trimmed (manifest "notes"); unusable ones are skipped with
the reason. Re-running the command resumes.
"""

from __future__ import annotations

import json
from pathlib import Path

from dexwm.prep.droid_shards import DroidJob, run


def main(root: Path, out: Path, **settings) -> dict:
    """Python callers: the command with keyword settings (see DroidJob); -> the manifest."""
    return run(DroidJob(root=root, out=out, **settings))


if __name__ == "__main__":
    from dexwm.config import parse

    manifest = run(parse(DroidJob))
    print(json.dumps({"counts": manifest["counts"], "skipped": manifest["skipped"]}, indent=1))
