"""The world-model surface: encode(frames), predict(feats, actions, dt), rollout(...), heatmaps(feats).

`WorldModel` bundles the frozen encoder (built lazily, never saved: only its spec and checksum are),
the feature and action normalisers (statistics saved as buffers), the predictor and the hand head.
All feature tensors it returns or takes are NORMALISED features (see `normalize_feats`); actions go
in raw (metres, radians) and are normalised inside.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from dexwm.data.actions import ACTION_DIM
from dexwm.keypoints import HEATMAP_POINTS, RIGHT
from dexwm.models.encoders import EncoderSpec, FrozenEncoder, encoder_shape, transform_uv
from dexwm.models.hand_head import HandHead, HandHeadConfig, soft_argmax
from dexwm.models.normalizer import Normalizer
from dexwm.models.predictor import Predictor, PredictorConfig


def _as(cls, x):
    return cls(**x) if isinstance(x, dict) else (x if x is not None else None)


class WorldModel(nn.Module):
    def __init__(
        self,
        encoder: EncoderSpec | dict,
        predictor: PredictorConfig | dict,
        hand_head: HandHeadConfig | dict | None = None,
        action_dim: int = ACTION_DIM,
        feature_norm: bool = True,
        shape: dict | None = None,
    ) -> None:
        super().__init__()
        self.encoder_spec = _as(EncoderSpec, encoder)
        self.encoder_spec.input_size = tuple(self.encoder_spec.input_size)
        self.pred_cfg = _as(PredictorConfig, predictor)
        self.hand_cfg = _as(HandHeadConfig, hand_head)
        self.shape = shape or encoder_shape(self.encoder_spec)  # num_tokens, dim, grid
        self.feature_norm = feature_norm
        D, N = self.shape["dim"], self.shape["num_tokens"]
        self.action_norm = Normalizer(action_dim)
        self.feat_norm = Normalizer(D)
        self.predictor = Predictor(D, N, action_dim, self.pred_cfg)
        self.hand_head = (
            HandHead(
                D,
                tuple(self.shape["grid"]),
                self.hand_cfg.heatmap_size(self.encoder_spec.input_size),
                self.hand_cfg,
            )
            if self.hand_cfg is not None
            else None
        )
        self.__dict__["_encoder"] = None  # not a registered submodule: not in state_dict

    # ----- construction / persistence -------------------------------------------------------
    def ctor_args(self) -> dict:
        """Plain-data constructor arguments (saved in checkpoints, loadable with weights_only)."""
        enc = self.encoder_spec.to_dict()
        return dict(
            encoder=enc,
            predictor=asdict(self.pred_cfg),
            hand_head=asdict(self.hand_cfg) if self.hand_cfg else None,
            action_dim=self.action_norm.mean.numel(),
            feature_norm=self.feature_norm,
            shape=dict(self.shape),
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> WorldModel:
        """Load from a training checkpoint (Lightning) or a `save()` file, with weights_only=True."""
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
        info = ckpt.get("dexwm")
        if info is None:
            raise ValueError(f"{path}: not a dexwm checkpoint (no 'dexwm' entry)")
        args = dict(info["world_model"])
        pred = dict(args["predictor"])
        pred.setdefault("cond_dim", pred["dim"])  # checkpoints from before cond_dim existed
        wm = cls(**dict(args, predictor=pred))
        sd = ckpt["state_dict"]
        sd = {k.removeprefix("wm."): v for k, v in sd.items() if k.startswith("wm.") or "." in k}
        wm.load_state_dict({k: v for k, v in sd.items() if not k.startswith("probe.")})
        wm.checkpoint_info = info
        return wm.eval()

    def save(self, path: str | Path, **extra) -> None:
        import io

        from dexwm.io import atomic_write_bytes

        buf = io.BytesIO()
        torch.save(
            {"state_dict": self.state_dict(), "dexwm": dict(world_model=self.ctor_args(), **extra)},
            buf,
        )
        atomic_write_bytes(path, buf.getvalue())

    # ----- encoder ----------------------------------------------------------------------------
    @property
    def encoder(self) -> FrozenEncoder:
        if self._encoder is None:
            enc = FrozenEncoder(self.encoder_spec)
            got = (enc.num_tokens, enc.dim)
            if got != (self.shape["num_tokens"], self.shape["dim"]):
                raise ValueError(f"encoder gives (N, D) = {got}, model was built for {self.shape}")
            self.__dict__["_encoder"] = enc.to(self.feat_norm.mean.device)
        return self._encoder

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        if self._encoder is not None:
            self._encoder._apply(fn, recurse)
        return out

    def normalize_feats(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw encoder features (..., N, D) (e.g. cached feats.npy) -> model feature space."""
        return self.feat_norm(raw.float()) if self.feature_norm else raw.float()

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """uint8 frames (..., H, W, 3) -> normalised features (..., N, D)."""
        lead = frames.shape[:-3]
        flat = frames.reshape(-1, *frames.shape[-3:])
        feats = torch.cat([self.encoder(flat[i : i + chunk]) for i in range(0, len(flat), chunk)])
        return self.normalize_feats(feats).reshape(*lead, *feats.shape[1:])

    # ----- prediction -------------------------------------------------------------------------
    def predict(self, feats: torch.Tensor, actions: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: feats (B, T+1, N, D), raw actions (B, T, A), dt (B, T) ->
        (B, T, N, D) where out[:, i] predicts feats[:, i+1]."""
        return self.predictor(feats, self.action_norm(actions), dt)

    def rollout(
        self,
        context: torch.Tensor,
        context_actions: torch.Tensor,
        context_dt: torch.Tensor,
        actions: torch.Tensor,
        dt: torch.Tensor,
    ) -> torch.Tensor:
        """Autoregressive rollout; context (Bc, C, N, D) with Bc = 1 or B, context_actions (Bc, C-1, A),
        raw future actions (B, H, A), dt (B, H) -> predicted features (B, H, N, D)."""
        ca = self.action_norm(context_actions)
        return self.predictor.rollout(context, ca, context_dt, self.action_norm(actions), dt)

    def heatmaps(self, feats: torch.Tensor) -> torch.Tensor:
        """features (..., N, D) -> hand heatmaps (..., 12, h, w); (h, w) = hand_cfg.scale x input size
        (see `uv_to_heatmap`)."""
        if self.hand_head is None:
            raise RuntimeError("this model was built without a hand head")
        lead = feats.shape[:-2]
        hm = self.hand_head(feats.reshape(-1, *feats.shape[-2:]))
        return hm.reshape(*lead, *hm.shape[1:])

    def hand_points(
        self, feats: torch.Tensor, hand: int = RIGHT, temperature: float = 0.05
    ) -> torch.Tensor:
        """features (..., N, D) -> one hand's wrist + 5 fingertips (..., 6, 2) located by the hand
        head (differentiable soft-argmax), in encoder-input pixels."""
        k = len(HEATMAP_POINTS)
        dev = self.feat_norm.mean.device
        hm = self.heatmaps(feats.to(dev))[..., hand * k : (hand + 1) * k, :, :]  # (..., 6, h, w)
        return (soft_argmax(hm, temperature) / self.hand_cfg.scale).to(feats.device)

    def uv_to_input(self, uv: torch.Tensor, src_hw: tuple[int, int]) -> torch.Tensor:
        """Pixels of stored frames (..., 2) -> pixels of the encoder input."""
        return transform_uv(uv, self.encoder_spec.input_size, src_hw)

    def uv_to_heatmap(self, uv: torch.Tensor, src_hw: tuple[int, int]) -> torch.Tensor:
        """Pixels of stored frames (..., 2) -> pixels of the hand heatmaps."""
        return self.uv_to_input(uv, src_hw) * self.hand_cfg.scale

    @property
    def heatmap_sigma(self) -> float:
        """Gaussian target width in heatmap pixels."""
        return self.hand_cfg.sigma * self.hand_cfg.scale
