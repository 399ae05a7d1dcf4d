"""Lightning CLI for dexwm: YAML configs from configs/, the resolved config saved with every run."""

from __future__ import annotations

import json

from lightning.pytorch.cli import LightningCLI

from dexwm.datamodule import ShardDataModule
from dexwm.training import WorldModelModule


def plain(obj) -> dict:
    """jsonargparse Namespace -> plain JSON-able dict (stored in checkpoints)."""
    d = obj.as_dict() if hasattr(obj, "as_dict") else obj
    return json.loads(json.dumps(d, default=str))


class WorldModelCLI(LightningCLI):
    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(WorldModelModule, ShardDataModule, **kwargs)

    def before_fit(self) -> None:
        self.model.run_config = plain(self.config.get(self.subcommand, self.config))
        self.model.run_config["data_sources"] = self.datamodule.describe()
