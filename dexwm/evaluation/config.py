"""Evaluation configuration: one dataclass (its defaults are the DexWM protocol), read by eval.py
and by `eval_config` (YAML files + overrides, for Python callers) through `dexwm.config`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from dexwm.config import load
from dexwm.data.loader import DataSource
from dexwm.evaluation.baselines import BASELINES
from dexwm.evaluation.metrics import DEXWM_PCK_PX
from dexwm.evaluation.pixel_decoder import DecoderConfig
from dexwm.evaluation.probe import ProbeConfig


@dataclass
class EvalConfig:
    """Evaluation of a checkpoint on held-out shards (defaults: the DexWM protocol)."""

    checkpoint: str  # a training checkpoint (e.g. runs/train/tiny/checkpoints/last.ckpt)
    data: list[DataSource]  # HELD-OUT shards; one result group per source (and per embodiment)
    out_dir: str = "runs/eval"
    train_data: list[DataSource] | None = None  # held-in shards for probe / decoder (None: the
    #   checkpoint's data.train)
    horizon: int = 20  # rollout steps (DexWM: 20 x 0.2 s = 4 s)
    step_s: float = 0.2  # seconds per step; frame gap = round(step_s * fps) per sample
    context: int | None = None  # context frames (None: the model's window, predictor.max_frames)
    clips_per_sample: int = 1  # distinct random clip starts per sample (seeded)
    max_clips: int | None = None  # per source (None: all)
    batch_size: int = 16
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    compare: dict[str, str] = field(default_factory=dict)  # name -> checkpoint (ablations)
    pck: bool | None = None  # None: wherever possible, skips stated; True: required (error if not)
    pck_px: list[float] = field(default_factory=lambda: list(DEXWM_PCK_PX))  # at 224x392
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    cache_dir: str | None = None  # probe / decoder cache (None: <out_dir>/cache)
    vis_clips: int = 4  # clips shown as image strips (and videos)
    videos: bool = True
    seed: int = 0
    progress: bool = True


def eval_config(cfg: EvalConfig | str | Path | list | None = None, **overrides) -> EvalConfig:
    """An EvalConfig from an EvalConfig, YAML file(s) (later ones win) or nothing, updated by
    `overrides` (plain values or nested dicts, as on the command line)."""
    if isinstance(cfg, EvalConfig):
        configs = [dataclasses.asdict(cfg)]
    else:
        configs = [] if cfg is None else list(cfg) if isinstance(cfg, list | tuple) else [cfg]
    return load(EvalConfig, *configs, **overrides)
