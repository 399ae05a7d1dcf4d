"""Helpers shared by the planning tests."""

from __future__ import annotations

from pathlib import Path

import timm  # noqa: F401  (before any MuJoCo EGL context: importing triton after one segfaults)
import torch
import yaml
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]


def tiny_model(seed: int = 0, perturb: bool = True):
    """The tiny preset's world model; with `perturb`, random non-zero predictor weights (the
    zero-initialised output layers would make every plan predict the same features)."""
    from dexwm.models.world_model import WorldModel

    cfg = yaml.safe_load((ROOT / "configs/model/tiny.yaml").read_text())["model"]
    torch.manual_seed(seed)
    wm = WorldModel(**{k: cfg[k] for k in ("encoder", "predictor", "hand_head", "feature_norm")})
    if perturb:
        for p in wm.predictor.parameters():
            torch.nn.init.normal_(p, std=0.02)
    return wm.eval()


class StopAt(Callback):
    """A Lightning callback (class path `_plan.StopAt` in a training config) that ends training
    after `step` optimiser steps, as an interruption would: the schedule still ends at max_steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True
