"""Lightning CLI for dexwm: YAML configs from configs/, dotted overrides, `--print_config`; the
resolved config (+ git commit and command) saved with every run, and `fit(args)` to train from
Python (data aggregation, the demo) exactly as `python train.py fit ...` does."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from dexwm.data.datamodule import ShardDataModule
from dexwm.io import write_run_record
from dexwm.training.module import WorldModelModule


def plain(obj) -> dict:
    """jsonargparse Namespace -> plain JSON-able dict (stored in checkpoints)."""
    d = obj.as_dict() if hasattr(obj, "as_dict") else obj
    return json.loads(json.dumps(d, default=str))


class SaveRunRecord(SaveConfigCallback):
    """config.yaml in the run's log folder, headed by the git commit and the command line
    (`dexwm.io.write_run_record`, as every other entry point writes it)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = trainer.log_dir  # a broadcast: every rank must ask
        if trainer.is_global_zero:
            write_run_record(log_dir, self.parser.dump(self.config, skip_none=False))
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


class WorldModelCLI(LightningCLI):
    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("save_config_callback", SaveRunRecord)
        super().__init__(WorldModelModule, ShardDataModule, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        """`--checkpoint.*`: periodic checkpoints + last.ckpt in <default_root_dir>/checkpoints, so
        `--ckpt_path last` resumes a killed run."""
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": -1,
                "checkpoint.every_n_train_steps": 250,
            }
        )
        parser.link_arguments(
            "trainer.default_root_dir",
            "checkpoint.dirpath",
            compute_fn=lambda d: os.path.join(d or ".", "checkpoints"),
        )

    def instantiate_trainer(self, **kwargs):
        """Unless the config names loggers, log to CSV and TensorBoard under default_root_dir."""
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        cfg = self._get(self.config_init, "trainer", default={})
        if cfg.get("strategy") == "fsdp":  # shard the predictor block by block (paper scale, GPUs)
            from lightning.pytorch.strategies import FSDPStrategy

            from dexwm.models.predictor import Block

            ckpt = self.model.wm.pred_cfg.grad_checkpointing
            kwargs["strategy"] = FSDPStrategy(
                auto_wrap_policy={Block}, activation_checkpointing_policy={Block} if ckpt else None
            )
        if cfg.get("logger") in (None, True):
            root = cfg.get("default_root_dir") or "runs/train"
            csv = CSVLogger(root, name="logs")
            kwargs["logger"] = [csv, TensorBoardLogger(root, name="logs", version=csv.version)]
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        self.model.run_config = plain(self.config.get(self.subcommand, self.config))
        self.model.run_config["data_sources"] = self.datamodule.describe()


def fit(args: list[str]) -> str:
    """`python train.py fit <args>` in this process; returns the run's last.ckpt."""
    cli = WorldModelCLI(args=["fit", *args])
    return str(Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt")
