"""Small synthetic datasets shared by the core tests (written once per test session)."""

from __future__ import annotations

from pathlib import Path

from dexwm.models.encoders import EncoderSpec, FrozenEncoder

_CACHE: dict[str, Path] = {}


def synthetic_shards(tmp_path_factory, episodes: int = 12, T: int = 12, fmt: str = "mp4") -> Path:
    from dexwm.data.synthetic import write_synthetic

    key = f"raw-{episodes}-{T}-{fmt}"
    if key not in _CACHE:
        out = tmp_path_factory.mktemp(key)
        write_synthetic(out, episodes=episodes, T=T, fmt=fmt, items_per_shard=4)
        _CACHE[key] = out
    return _CACHE[key]


def synthetic_feats(tmp_path_factory, episodes: int = 12, T: int = 12) -> Path:
    from dexwm.data.feature_cache import cache_features

    key = f"feats-{episodes}-{T}"
    if key not in _CACHE:
        raw = synthetic_shards(tmp_path_factory, episodes, T)
        out = tmp_path_factory.mktemp(key)
        cache_features(str(raw), out, EncoderSpec().to_dict(), FrozenEncoder, progress=False)
        _CACHE[key] = out
    return _CACHE[key]
