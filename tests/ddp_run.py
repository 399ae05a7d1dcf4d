"""Helper for tests/test_ddp.py (not a test): train a tiny model with Lightning DDP on CPU (gloo)
and record, per rank, the clips it saw, its batch count and a checksum of its weights.

    python tests/ddp_run.py DATA OUT --devices 2 --max_steps 4 [--stop_at 2] [--ckpt PATH]
"""

import argparse
import hashlib
import json
import os
from pathlib import Path

import lightning as L
import torch

from dexwm.data.clips import ClipConfig
from dexwm.data.datamodule import ShardDataModule
from dexwm.data.loader import DataSource
from dexwm.models.predictor import PredictorConfig
from dexwm.training.module import OptimConfig, WorldModelModule


def weights_hash(module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.wm.state_dict().items()):
        h.update(k.encode() + v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class StopAt(L.Callback):
    """Stop (as if killed after a checkpoint) at a step, keeping the planned LR schedule."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


class Record(L.Callback):
    def __init__(self, out: Path):
        self.out, self.clips, self.batches, self.start = out, [], {}, None

    def on_train_start(self, trainer, module):
        self.start = weights_hash(module)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        e = trainer.current_epoch
        self.batches[e] = self.batches.get(e, 0) + 1
        self.clips += [[e, k, i] for k, i in zip(batch["key"], batch["indices"].tolist())]

    def on_train_end(self, trainer, module):
        rec = dict(rank=trainer.global_rank, world=trainer.world_size, clips=self.clips, batches=self.batches,
                   start=self.start, end=weights_hash(module), step=trainer.global_step)  # fmt: skip
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(rec))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--max_steps", type=int, default=4)
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--stop_at", type=int, default=0)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(0)
    torch.set_num_threads(1)
    dm = ShardDataModule(train=[DataSource([a.data])], clip=ClipConfig(num_frames=3, mode="fixed", gap=2),
                         batch_size=4, shuffle=8, stats_clips=24)  # fmt: skip
    module = WorldModelModule(predictor=PredictorConfig(dim=32, depth=1, heads=2, max_frames=2),
                              optim=OptimConfig(lr=1e-3))  # fmt: skip
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=out / "ckpt", save_last=True)
    trainer = L.Trainer(
        accelerator="cpu", devices=a.devices, strategy="ddp" if a.devices > 1 else "auto",
        max_steps=a.max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[Record(out), ckpt] + ([StopAt(a.stop_at)] if a.stop_at else []), use_distributed_sampler=False,
    )  # fmt: skip
    trainer.fit(module, dm, ckpt_path=a.ckpt)
    if trainer.global_rank == 0:
        print("done", os.getpid())


if __name__ == "__main__":
    main()
