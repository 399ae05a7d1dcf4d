"""Frozen encoders: the offline default is really pretrained, frozen, and shaped as documented."""

import numpy as np
import pytest
import torch

from dexwm.models.encoders import (
    PACKAGED_WEIGHTS,
    EncoderError,
    FrozenEncoder,
    _load_by_order,
    _packaged_file,
    encoder_shape,
    transform_uv,
)

skimage_data = pytest.importorskip("skimage.data")

# ImageNet classes: 281-285 domestic cats; 967 espresso, 968 cup, 504 coffee mug
CATS, COFFEE = set(range(281, 286)), {967, 968, 504}


@pytest.fixture(scope="module")
def encoder():
    return FrozenEncoder()  # the offline default


def _full_classifier(weights_from_package: bool):
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    if weights_from_package:
        _load_by_order(model, _packaged_file("tf_efficientnet_lite0"))
    return model


def _top5(model, img: np.ndarray) -> set[int]:
    x = torch.from_numpy(img)[None].permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    x = (x - 0.5) / 0.5  # timm's tf_efficientnet_lite0 preprocessing
    with torch.no_grad():
        return set(model(x)[0].topk(5).indices.tolist())


def test_offline_default_is_pretrained_on_real_photos(encoder):
    """The packaged weights classify scikit-image's real photos; random weights do not."""
    model = _full_classifier(True)
    assert _top5(model, skimage_data.chelsea()) & CATS
    assert _top5(model, skimage_data.coffee()) & COFFEE
    rand = _full_classifier(False)
    assert not (
        _top5(rand, skimage_data.chelsea()) & CATS and _top5(rand, skimage_data.coffee()) & COFFEE
    )
    # ... and the encoder's features are exactly that network's last block output
    img = torch.from_numpy(skimage_data.chelsea()[:, 50:350])[None]  # (1, 300, 300, 3)
    x = encoder.preprocess(img)
    with torch.no_grad():
        ref = model.blocks(model.bn1(model.conv_stem(x)))  # (1, 320, 4, 4)
    torch.testing.assert_close(encoder(img), ref.flatten(2).transpose(1, 2))
    assert encoder.describe()["pretrained"] is True
    assert "tf_efficientnet_lite0" in PACKAGED_WEIGHTS


def test_encoder_is_frozen_and_deterministic(encoder):
    assert all(not p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not encoder.backbone.training
    frames = torch.randint(0, 255, (3, 96, 160, 3), dtype=torch.uint8)
    a, b = encoder(frames), encoder(frames)
    assert a.shape == (3, 16, 320) and not a.requires_grad
    torch.testing.assert_close(a, b)
    assert (encoder.num_tokens, encoder.dim, encoder.grid) == (16, 320, (4, 4))
    assert len(encoder.checksum) == 16


def test_paper_encoder_shape_without_weights():
    """DINOv2 ViT-L/14 at 224x392 -> 16x28 = 448 tokens of 1024 (no download needed for shapes)."""
    shape = encoder_shape(
        {
            "name": "timm:vit_large_patch14_dinov2.lvd142m",
            "weights": "hub",
            "input_size": (224, 392),
        }
    )
    assert shape == {"num_tokens": 448, "dim": 1024, "grid": [16, 28]}


def test_random_weights_are_labelled():
    enc = FrozenEncoder(
        {"name": "timm:tf_efficientnet_lite0", "weights": "random", "input_size": (64, 64)}
    )
    assert enc.describe()["pretrained"] is False
    assert enc.checksum != FrozenEncoder().checksum


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "timm:no_such_net"}, "timm has no model 'no_such_net'"),
        ({"name": "dinov2"}, "must look like 'timm:<model>'"),
        ({"name": "timm:resnet18", "weights": "packaged"}, "no registry package ships weights"),
        ({"name": "timm:resnet18", "weights": "/missing/weights.pth"}, "not found"),
    ],
)
def test_bad_encoder_config_is_clear(spec, message):
    with pytest.raises(EncoderError, match=message):
        FrozenEncoder(spec)


def test_bad_frames_rejected(encoder):
    with pytest.raises(EncoderError, match="uint8"):
        encoder(torch.zeros(2, 64, 64, 3))


def test_crop_and_uv_transform_agree(encoder):
    """A bright pixel in a wide source frame lands where transform_uv says after resize + crop."""
    enc = FrozenEncoder(
        {"name": "timm:tf_efficientnet_lite0", "weights": "random", "input_size": (64, 112)}
    )
    src = torch.zeros(1, 90, 200, 3, dtype=torch.uint8)
    u, v = 150, 40
    src[0, v - 2 : v + 3, u - 2 : u + 3] = 255
    x = enc.preprocess(src)[0, 0]  # (64, 112) normalised
    peak = torch.nonzero(x == x.max()).float().mean(0)  # (row, col)
    uv = transform_uv(torch.tensor([u + 0.5, v + 0.5]), (64, 112), (90, 200))  # pixel centre
    assert abs(uv[0] - (peak[1] + 0.5)) < 0.5 and abs(uv[1] - (peak[0] + 0.5)) < 0.5


def test_transformers_backbone_from_a_local_folder(tmp_path):
    """`hf:<folder>` loads a transformers model saved locally (offline path): a small DINOv2-style
    ViT with register tokens -> its patch tokens only, on the right grid."""
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                       patch_size=14, image_size=224)  # fmt: skip
    model = Dinov2Model(cfg).eval()
    model.save_pretrained(tmp_path / "dino")
    enc = FrozenEncoder(
        {
            "name": f"hf:{tmp_path / 'dino'}",
            "weights": str(tmp_path / "dino"),
            "input_size": (112, 196),
        }
    )
    frames = torch.randint(0, 255, (2, 120, 210, 3), dtype=torch.uint8)
    out = enc(frames)
    assert out.shape == (2, 8 * 14, 64) and enc.grid == (8, 14)
    with torch.no_grad():
        ref = model(pixel_values=enc.preprocess(frames)).last_hidden_state[:, 1:]
    torch.testing.assert_close(out, ref)
    assert all(not p.requires_grad for p in enc.parameters())


def test_stride16_stage_skips_the_later_blocks_with_the_same_features_and_checksum():
    """The tiny preset taps stage 3 (stride 16): the encoder runs only the blocks up to it, its
    features equal the whole timm feature network's and its checksum names the same weights."""
    from dexwm.models.encoders import EncoderSpec, _build_timm, weights_checksum

    spec = EncoderSpec(name="timm:tf_efficientnet_lite0", weights="packaged", stage=3)
    enc = FrozenEncoder(spec)
    full, _, _ = _build_timm(spec, "tf_efficientnet_lite0", False)  # every block, as timm runs it
    full.eval()
    assert len(enc.backbone.blocks) < len(full.blocks) == 7
    frames = torch.randint(0, 255, (2, 128, 128, 3), dtype=torch.uint8)
    with torch.no_grad():
        ref = full(enc.preprocess(frames))[0]  # (2, 112, 8, 8)
    assert torch.equal(enc(frames), ref.flatten(2).transpose(1, 2))
    assert enc.checksum == weights_checksum(full)
    assert (enc.num_tokens, enc.dim, enc.grid) == (64, 112, (8, 8))
