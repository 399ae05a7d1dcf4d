"""Batched torch forward kinematics equals MuJoCo's own site positions."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")  # Mesa llvmpipe: faster with one thread here

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dexwm.embodiment import gripper_keypoints  # noqa: E402
from dexwm.keypoints import FINGERTIPS  # noqa: E402
from dexwm.sim.kinematics import KeypointFK, TreeFK  # noqa: E402
from dexwm.sim.rig import Rig  # noqa: E402


@pytest.fixture(scope="module", params=["allegro", "shadow", "panda_gripper"])
def rig(request):
    return Rig(request.param)


def random_joints(rig, n, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = rig.joint_limits.T
    return rng.uniform(lo, hi, size=(n, len(lo)))


def mujoco_sites(rig, q, sites):
    """Site positions from mj_kinematics at joints q (J,)."""
    data = mujoco.MjData(rig.model)
    rig._write_joints(data, q)
    mujoco.mj_kinematics(rig.model, data)
    return np.stack([data.site(s).xpos.copy() for s in sites])


def test_tree_fk_matches_mj_kinematics(rig):
    joints = rig.model_joints
    sites = list(dict.fromkeys(rig.info.keypoint_sites)) + [rig.info.palm_site]
    fk = TreeFK(rig.model, joints, sites)
    q = random_joints(rig, 16)[:, : len(joints)]
    got64 = fk(torch.tensor(q, dtype=torch.float64)).numpy()
    got32 = fk(torch.tensor(q, dtype=torch.float32)).numpy()
    for k in range(len(q)):
        ref = mujoco_sites(rig, np.concatenate([q[k], [0.0] * rig.info.gripper]), sites)
        np.testing.assert_allclose(got64[k], ref, atol=1e-9)
        np.testing.assert_allclose(got32[k], ref, atol=1e-5)


def test_keypoint_fk_in_camera_frame(rig):
    fk = KeypointFK(rig.model, rig.info, rig.camera)
    q = random_joints(rig, 8, seed=1)
    kp = fk(torch.tensor(q, dtype=torch.float64)).numpy()
    assert kp.shape == (8, 21, 3)
    for k in range(len(q)):
        if rig.info.gripper:
            tcp = mujoco_sites(rig, q[k], [rig.info.palm_site])
            world = gripper_keypoints(tcp, np.array([q[k, -1]]))[0]
        else:
            world = mujoco_sites(rig, q[k], rig.info.keypoint_sites)
        np.testing.assert_allclose(kp[k], rig.camera.to_camera(world), atol=1e-9)
        # the rig's commanded keypoints (used for the stored actions) agree
        np.testing.assert_allclose(rig.commanded(q[k])["keypoints"], world, atol=1e-9)
    if rig.embodiment == "allegro":  # 4 fingers: ring copied into the little-finger slot
        np.testing.assert_array_equal(kp[:, 17:21], kp[:, 13:17])
    with pytest.raises(ValueError, match="must be"):
        fk(torch.zeros(3, len(q[0]) + 1))


def test_fk_is_differentiable():
    rig = Rig("allegro")
    fk = KeypointFK(rig.model, rig.info, rig.camera)
    q0 = torch.tensor(random_joints(rig, 1, seed=2), dtype=torch.float64)
    q = q0.clone().requires_grad_(True)
    tips = fk(q)[:, list(FINGERTIPS)].sum()
    tips.backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    eps = 1e-6  # central differences on every joint
    for j in range(q0.shape[1]):
        d = torch.zeros_like(q0)
        d[0, j] = eps
        num = (fk(q0 + d)[:, list(FINGERTIPS)].sum() - fk(q0 - d)[:, list(FINGERTIPS)].sum()) / (
            2 * eps
        )
        assert abs(num.item() - q.grad[0, j].item()) < 1e-5


def test_fk_batch_of_planner_size_is_fast():
    import time

    rig = Rig("allegro")
    fk = KeypointFK(rig.model, rig.info, rig.camera)
    q = torch.tensor(random_joints(rig, 1536), dtype=torch.float32)  # 512 samples x horizon 3
    fk(q)
    t0 = time.perf_counter()
    for _ in range(5):
        out = fk(q)
    per_call = (time.perf_counter() - t0) / 5
    assert out.shape == (1536, 21, 3)
    assert per_call < 0.1, f"{per_call * 1e3:.1f} ms for 1536 configurations"
