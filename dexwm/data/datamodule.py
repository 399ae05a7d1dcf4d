"""Lightning data module over shard sources (see dexwm/data/loader.py for the pipeline itself)."""

from __future__ import annotations

from dataclasses import asdict

import lightning as L

from dexwm.data.clips import ClipConfig
from dexwm.data.loader import DataSource, make_loader, source_from
from dexwm.data.stages import BAD, Epoch


class ShardDataModule(L.LightningDataModule):
    """train / val: lists of sources (paths + mixing weight). `resampled` streams shards forever
    (multi-GPU friendly; then `epoch_batches` sets the epoch length per rank)."""

    def __init__(
        self,
        train: list[DataSource] | None = None,
        val: list[DataSource] | None = None,
        clip: ClipConfig | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        shuffle: int = 256,
        resampled: bool = False,
        epoch_batches: int | None = None,
        val_batches: int | None = None,
        on_bad: str = "raise",
        stats_clips: int = 2000,
        stats_file: str | None = None,
        stats_sources: list[str] | None = None,
        seed: int = 0,
    ) -> None:
        """stats_sources: names of the train sources the normalisation statistics are fitted on
        (e.g. only the target embodiment's when other embodiments are mixed in); None: all."""
        super().__init__()
        self.train_sources = [source_from(s) for s in (train or [])]
        if not self.train_sources:
            raise ValueError(
                "data.train: give at least one source (paths of shard folders or files)"
            )
        self.val_sources = [source_from(s) for s in (val or [])]
        self.clip = clip or ClipConfig()
        self.batch_size, self.num_workers, self.shuffle = batch_size, num_workers, shuffle
        self.resampled, self.epoch_batches, self.val_batches = resampled, epoch_batches, val_batches
        self.on_bad, self.stats_clips, self.stats_file, self.seed = (
            on_bad,
            stats_clips,
            stats_file,
            seed,
        )
        self.stats_sources = None if stats_sources is None else list(stats_sources)
        if self.stats_sources is not None:
            names = [s.name for s in self.train_sources]
            missing = [n for n in self.stats_sources if n not in names]
            if missing or not self.stats_sources:
                raise ValueError(
                    f"data.stats_sources {self.stats_sources}: name train sources (named: {names})"
                )
        self.epoch = Epoch()

    def stats_train_sources(self) -> list[DataSource]:
        """The train sources the normalisation statistics are fitted on."""
        if self.stats_sources is None:
            return self.train_sources
        return [s for s in self.train_sources if s.name in self.stats_sources]

    def set_epoch(self, epoch: int) -> None:
        """Called at the start of every training epoch: reseeds shard order, shuffling, sampling."""
        self.epoch.value = int(epoch)

    def describe(self) -> dict:
        return {
            "train": [asdict(s) for s in self.train_sources],
            "val": [asdict(s) for s in self.val_sources],
            "clip": asdict(self.clip),
        }

    def train_dataloader(self):
        return make_loader(
            self.train_sources, self.clip, batch_size=self.batch_size, num_workers=self.num_workers,
            shuffle=self.shuffle, resampled=self.resampled, epoch_batches=self.epoch_batches,
            seed=self.seed, on_bad=self.on_bad, epoch=self.epoch,
        )  # fmt: skip

    def val_dataloader(self):
        if not self.val_sources:
            return []
        return make_loader(
            self.val_sources, self.clip, batch_size=self.batch_size, num_workers=0, shuffle=0,
            epoch_batches=self.val_batches, seed=self.seed, on_bad=self.on_bad, drop_last=False,
        )  # fmt: skip

    @staticmethod
    def bad_counts() -> dict:
        """Shards / samples skipped so far in this process (on_bad='skip')."""
        return dict(BAD)
