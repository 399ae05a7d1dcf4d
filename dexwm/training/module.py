"""Lightning module: losses, optimisation (AdamW + OneCycle, as DexWM), logging, checkpoint content.

Checkpoints hold state dicts plus, under `checkpoint["dexwm"]`, the world model's constructor
arguments, the encoder's identity (name, weights checksum), the resolved run config and the git
commit: plain data, so `torch.load(path, weights_only=True)` reads them.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch

from dexwm.data.stats import compute_stats, load_stats, save_stats
from dexwm.io import git_commit
from dexwm.models.encoders import EncoderSpec
from dexwm.models.hand_head import HandHeadConfig
from dexwm.models.losses import feature_loss, hand_loss
from dexwm.models.predictor import PredictorConfig
from dexwm.models.world_model import WorldModel


@dataclass
class LossConfig:
    feature: str = "mse"  # or "l1"
    hand_weight: float = 100.0  # DexWM: total = feature loss + 100 x heatmap loss
    rollout_steps: int = 0  # > 0: also roll out this many steps with gradients (fine-tuning)
    rollout_weight: float = 1.0


@dataclass
class OptimConfig:
    lr: float = 1e-4  # OneCycle max lr
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    pct_start: float = 0.1
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    # Linear LR scaling: if set, the max lr used is lr x global_batch / base_batch, where
    # global_batch = batch_size x devices x nodes x accumulate_grad_batches (DexWM: 1e-4 at 4096).
    base_batch: int | None = None


def scaled_lr(
    lr: float, base_batch: int | None, batch_size: int, world_size: int, accumulate: int
) -> float:
    """The linear learning-rate scaling rule (Goyal et al. 2017) used when base_batch is set."""
    return lr if not base_batch else lr * batch_size * world_size * accumulate / base_batch


class WorldModelModule(L.LightningModule):
    def __init__(
        self,
        encoder: EncoderSpec | None = None,
        predictor: PredictorConfig | None = None,
        hand_head: HandHeadConfig | None = None,
        feature_norm: bool = True,
        loss: LossConfig | None = None,
        optim: OptimConfig | None = None,
        init_from: str | None = None,
        compile: bool = False,
    ) -> None:
        """compile: torch.compile the predictor (GPU runs; on a CPU it costs 12-24 s and did not
        pay off here, DESIGN.md s.6)."""
        super().__init__()
        self.compile_predictor = compile
        self.wm = WorldModel(
            encoder or EncoderSpec(),
            predictor or PredictorConfig(),
            hand_head,
            feature_norm=feature_norm,
        )
        self.loss_cfg, self.optim_cfg = loss or LossConfig(), optim or OptimConfig()
        self.init_from = init_from
        self.run_config: dict = {}  # set by the CLI: the resolved config of this run
        self.data_encoder: dict | None = None  # encoder identity read from cached-feature meta
        if init_from:  # fine-tuning: start from another run's weights (and statistics)
            src = WorldModel.from_checkpoint(init_from)
            if src.ctor_args()["shape"] != self.wm.ctor_args()["shape"]:
                raise ValueError(f"{init_from}: encoder shape differs from this model's")
            self.wm.load_state_dict(src.state_dict())

    # ----- setup ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self.trainer else None
        if dm is None:
            return
        T = dm.clip.num_frames - 1
        W = self.wm.pred_cfg.max_frames
        if T > W:
            raise ValueError(
                f"data.clip.num_frames={dm.clip.num_frames} needs model.predictor.max_frames >= {T}, got {W}"
            )
        if T < W:
            warnings.warn(f"clips train positions 0..{T - 1} of max_frames={W}", stacklevel=2)
        if stage == "fit" and not bool(self.wm.action_norm.fitted):
            if getattr(dm, "stats_file", None):  # precomputed (python -m data_prep.stats)
                stats = load_stats(dm.stats_file)
            else:
                stats = compute_stats(
                    dm.stats_train_sources(),
                    dm.clip,
                    dm.stats_clips,
                    encode=lambda f: self.wm.encoder(f).cpu(),
                    progress=self.trainer.is_global_zero,
                )
            self.wm.action_norm.set_stats(
                torch.tensor(stats["action_mean"]), torch.tensor(stats["action_std"])
            )
            if self.wm.feature_norm and "feat_mean" not in stats:
                raise ValueError(
                    "feature normalisation needs feature statistics: compute them on shards with cached "
                    "features (python -m data_prep.stats), or set model.feature_norm: false"
                )
            D = self.wm.shape["dim"]
            if self.wm.feature_norm and len(stats["feat_mean"]) != D:
                raise ValueError(
                    f"the training features are {len(stats['feat_mean'])} wide, the model's encoder "
                    f"({self.wm.encoder_spec.name}, stage {self.wm.encoder_spec.stage}) gives {D}: "
                    "cache the features with the model's encoder spec, or set model.encoder to "
                    "the spec they were cached with"
                )
            if self.wm.feature_norm:
                self.wm.feat_norm.set_stats(
                    torch.tensor(stats["feat_mean"]), torch.tensor(stats["feat_std"])
                )
            if self.trainer.is_global_zero and self.trainer.loggers and self.trainer.log_dir:
                save_stats(Path(self.trainer.log_dir) / "stats.json", stats)

    # ----- losses -----------------------------------------------------------------------------
    def features(self, batch: dict) -> torch.Tensor:
        """(B, T, N, D) normalised features of a batch: cached ones, or the encoder on frames."""
        if "feats" in batch:
            return self.wm.normalize_feats(batch["feats"])
        return self.wm.encode(batch["frames"])

    def _uv_to_heatmap(self, uv: torch.Tensor, frame_hw: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(uv)
        for hw in frame_hw.unique(dim=0):
            sel = (frame_hw == hw).all(-1)
            out[sel] = self.wm.uv_to_heatmap(uv[sel], (int(hw[0]), int(hw[1])))
        return out

    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        feats = self.features(batch)  # (B, T+1, N, D)
        actions, dt = batch["actions"], batch["dt"]  # (B, T, A), (B, T)
        pred = self.wm.predict(feats, actions, dt)  # (B, T, N, D)
        losses = {"feat": feature_loss(pred, feats[:, 1:], self.loss_cfg.feature)}
        if self.wm.hand_head is not None and self.loss_cfg.hand_weight > 0:
            uv = self._uv_to_heatmap(
                batch["hands_uv"][:, 1:], batch["frame_hw"]
            )  # (B, T, 2, 21, 2)
            hm = self.wm.heatmaps(pred)  # (B, T, 12, H, W)
            # per keypoint: a valid hand's points cropped out of the stored frame are not trained
            vis = batch.get("keypoints_visible", batch["hands_visible"])[:, 1:]
            losses["hand"] = hand_loss(hm, uv, vis, self.wm.heatmap_sigma)
        k = self.loss_cfg.rollout_steps
        if k > 0:
            C = feats.shape[1] - k
            if C < 1:
                raise ValueError(f"loss.rollout_steps={k} needs clips of more than {k} frames")
            roll = self.wm.rollout(
                feats[:, :C],
                actions[:, : C - 1],
                dt[:, : C - 1],
                actions[:, C - 1 :],
                dt[:, C - 1 :],
            )
            losses["rollout"] = feature_loss(roll, feats[:, C:], self.loss_cfg.feature)
        return losses

    def weighted_total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        w = {
            "feat": 1.0,
            "hand": self.loss_cfg.hand_weight,
            "rollout": self.loss_cfg.rollout_weight,
        }
        return sum(w[k] * v for k, v in losses.items())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch)
        total = self.weighted_total(losses)
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"non-finite loss at step {self.global_step}: { ({k: v.item() for k, v in losses.items()}) }"
            )
        B = batch["actions"].shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=B)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=B)
        return total

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        losses = self.compute_losses(batch)
        feats = self.features(batch)
        copy_last = feature_loss(feats[:, :-1], feats[:, 1:], self.loss_cfg.feature)
        B = batch["actions"].shape[0]
        self.log("val/loss", self.weighted_total(losses), prog_bar=True, batch_size=B)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=B)
        self.log("val/feat_copy_last", copy_last, batch_size=B)

    # ----- optimisation -----------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.compile_predictor and not getattr(self, "_compiled", False):
            self.wm.predictor.compile()  # in place: state-dict keys unchanged
            self._compiled = True

    def configure_optimizers(self):
        o = self.optim_cfg
        params = [p for p in self.wm.parameters() if p.requires_grad]
        dm = self.trainer.datamodule
        batch = getattr(dm, "batch_size", 1)
        lr = scaled_lr(
            o.lr, o.base_batch, batch, self.trainer.world_size, self.trainer.accumulate_grad_batches
        )
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
        total = self.trainer.estimated_stepping_batches
        if not total or total == float("inf"):
            raise ValueError(
                "OneCycle needs a finite schedule: set trainer.max_steps (or max_epochs with epoch_batches)"
            )
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=int(total), pct_start=o.pct_start,
            div_factor=o.div_factor, final_div_factor=o.final_div_factor,
        )  # fmt: skip
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----- checkpoints ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        enc = self.data_encoder or (
            self.wm._encoder.describe()
            if self.wm._encoder is not None
            else self.wm.encoder_spec.to_dict()
        )
        checkpoint["dexwm"] = {
            "world_model": self.wm.ctor_args(),
            "encoder": enc,
            "loss": asdict(self.loss_cfg),
            "optim": {
                k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.optim_cfg).items()
            },
            "config": self.run_config,
            "git_commit": git_commit(),
        }
        checkpoint.pop("hyper_parameters", None)

    def on_train_epoch_start(self) -> None:
        dm = self.trainer.datamodule
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        for enc in batch.get("encoder") or []:
            self.check_data_encoder(enc)

    def check_data_encoder(self, enc: dict) -> None:
        """Cached features must come from this model's encoder (name, input size, one checksum)."""
        spec = self.wm.encoder_spec
        if enc["name"] != spec.name or tuple(enc["input_size"]) != tuple(spec.input_size):
            raise ValueError(
                f"cached features were made by {enc['name']} at {enc['input_size']}, the model uses "
                f"{spec.name} at {list(spec.input_size)}: re-run data_prep/cache_features.py"
            )
        if self.data_encoder is None:
            self.data_encoder = dict(enc)
        elif enc.get("checksum") != self.data_encoder.get("checksum"):
            raise ValueError(
                f"cached features from two different encoder weights ({enc.get('checksum')} vs "
                f"{self.data_encoder.get('checksum')}) in one run"
            )
