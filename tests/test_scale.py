"""Paper-scale configs are real: they parse and instantiate, and a training step runs on the CPU at a
reduced size with the same code path (gradient checkpointing on). LR scaling rule."""

from pathlib import Path

import torch

from dexwm.config import load
from dexwm.training.cli import WorldModelCLI
from dexwm.training.module import WorldModelModule, scaled_lr

ROOT = Path(__file__).resolve().parents[1]
PAPER = [str(ROOT / "configs/model/paper.yaml"), str(ROOT / "configs/train/paper.yaml")]


def test_paper_config_instantiates_at_dexwm_size(tmp_path):
    args = ["--config", PAPER[0], "--config", PAPER[1], "--trainer.accelerator", "cpu",
            "--trainer.devices", "1", "--trainer.num_nodes", "1", "--trainer.precision", "32",
            "--trainer.default_root_dir", str(tmp_path), "--model.compile", "false"]  # fmt: skip
    cli = WorldModelCLI(args=args, run=False)
    wm = cli.model.wm
    pred = sum(p.numel() for p in wm.predictor.parameters())
    assert 440e6 < pred < 480e6  # DexWM: ~456M (32 blocks x 1024, MLP ratio 2)
    assert wm.shape == {"num_tokens": 448, "dim": 1024, "grid": [16, 28]}
    assert wm.pred_cfg.max_frames == 8 and cli.datamodule.clip.num_frames == 9
    assert cli.datamodule.batch_size == 16 and cli.model.optim_cfg.base_batch == 4096
    assert wm.hand_head.out_size == (224, 392)
    assert cli.trainer.accumulate_grad_batches == 1


def test_paper_step_runs_on_cpu_at_reduced_size():
    torch.manual_seed(0)
    module = load(
        WorldModelModule, PAPER[0], section="model",
        predictor={"depth": 2, "dim": 128, "heads": 4}, hand_head={"dim": 64, "depth": 1, "heads": 4},
    )  # fmt: skip
    assert module.wm.pred_cfg.grad_checkpointing
    B, T = 1, 9
    batch = {
        "feats": torch.randn(B, T, 448, 1024),
        "actions": torch.randn(B, T - 1, 134) * 0.01,
        "dt": torch.full((B, T - 1), 0.2),
        "hands_uv": torch.rand(B, T, 2, 21, 2) * torch.tensor([392.0, 224.0]),
        "hands_visible": torch.ones(B, T, 2, dtype=torch.bool),
        "frame_hw": torch.tensor([[224, 392]]),
    }
    module.train()
    losses = module.compute_losses(batch)
    total = module.weighted_total(losses)
    total.backward()
    assert set(losses) == {"feat", "hand"} and torch.isfinite(total)
    assert all(p.grad is not None for p in module.wm.predictor.parameters() if p.requires_grad)


def test_linear_lr_scaling_rule():
    assert scaled_lr(1e-4, 4096, 16, 256, 1) == 1e-4  # DexWM: 16 x 256 GPUs
    assert abs(scaled_lr(1e-4, 4096, 16, 8, 2) - 1e-4 * 256 / 4096) < 1e-12
    assert scaled_lr(3e-4, None, 32, 1, 1) == 3e-4
