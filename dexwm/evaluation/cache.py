"""Cache of the small models evaluation trains (keypoint probe, pixel decoder), so re-runs reuse them.

A file is named by a hash of everything that determines the trained weights (kind, config, encoder
identity, training shards with sizes and mtimes, seed) and holds a state dict, constructor arguments
and a summary: plain data, loaded with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch
from torch import nn

from dexwm.io import atomic_write_bytes


def cache_path(cache_dir: str | Path, kind: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return Path(cache_dir) / f"{kind}-{digest[:16]}.pt"


def save_module(path: str | Path, module: nn.Module, key: dict, summary: dict) -> None:
    buf = io.BytesIO()
    torch.save(
        {"state_dict": module.state_dict(), "ctor": module.ctor, "key": json.loads(
            json.dumps(key, default=str)), "summary": summary},
        buf,
    )  # fmt: skip
    atomic_write_bytes(path, buf.getvalue())


def load_module(path: str | Path, cls) -> tuple[nn.Module, dict]:
    """-> (module in eval mode, its training summary)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    module = cls(**ckpt["ctor"])
    module.load_state_dict(ckpt["state_dict"])
    return module.eval(), dict(ckpt["summary"], cached=str(path))
