"""Action (and feature) statistics over shards, for the model's normalisers.

Usage:
    python -m data_prep.stats --shards '[runs/demo/feats/allegro, runs/demo/feats/shadow]' \
        --out runs/demo/stats.json [--clip.num_frames 4 --clip.window_s 1.0] [--max_clips 2000]

Training computes these itself at start unless given `--data.stats_file`; computing them once here
lets several runs (or all DDP ranks) share exactly the same normalisation.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dexwm.data.clips import ClipConfig
from dexwm.data.loader import DataSource
from dexwm.data.stats import compute_stats, save_stats


def main(
    shards: list[str], out: str, clip: ClipConfig | None = None, max_clips: int = 2000
) -> dict:
    """One source per entry of `shards`; up to max_clips clips each, spread over all shards."""
    clip = clip or ClipConfig()
    stats = compute_stats([DataSource([s]) for s in shards], clip, max_clips)
    save_stats(out, stats)
    return stats


def cli(argv: list[str] | None = None) -> int:
    """The command line (default: sys.argv) -> exit code; ends with a one-line summary."""
    from dexwm.config import command

    return command(
        main,
        lambda kw: main(**kw),
        lambda kw, s: (f"wrote statistics of {s['clips']} clips to {kw['out']}", True),
        argv,
        record=lambda kw: str(Path(kw["out"]).parent),
    )


if __name__ == "__main__":
    sys.exit(cli())
