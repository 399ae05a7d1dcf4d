"""Run a frozen encoder over shards once and write the same samples plus `feats.npy` (float16).

Usage:
    python -m data_prep.cache_features --shards runs/demo/shards/allegro --out runs/demo/feats/allegro \
        [--encoder.name timm:tf_efficientnet_lite0 --encoder.weights packaged --encoder.input_size '[128, 128]'] \
        [--drop_frames true] [--workers 2] [--overwrite true]

`--shards` takes shard files, folders with a manifest.json, globs or URLs. Output shards mirror the
input ones; meta.json gains `encoder` (name, weights, input size, weights checksum, token grid), which
training and evaluation check against the model. Re-running resumes: finished shards are skipped.
"""

from __future__ import annotations

import sys

from dexwm.data.feature_cache import cache_features
from dexwm.models.encoders import EncoderSpec, FrozenEncoder


def main(
    shards: list[str] | str,
    out: str,
    encoder: EncoderSpec = EncoderSpec(),  # noqa: B008  (a frozen default, read-only)
    drop_frames: bool = False,
    workers: int = 1,
    overwrite: bool = False,
) -> dict:
    """Encode every sample of `shards` into `out` (see module docstring)."""
    return cache_features(
        shards, out, encoder.to_dict(), FrozenEncoder, drop_frames, workers, overwrite
    )


def cli(argv: list[str] | None = None) -> int:
    """The command line (default: sys.argv) -> exit code; ends with a one-line summary."""
    from dexwm.config import command
    from dexwm.data.shards import summarize

    return command(main, lambda kw: main(**kw), lambda kw, m: summarize(m, kw["out"]), argv)


if __name__ == "__main__":
    sys.exit(cli())
