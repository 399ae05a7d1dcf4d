"""Recording episodes on the rig as shards (schema v1), for data aggregation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dexwm.data.schema import make_meta, sample_key
from dexwm.data.shards import samples_to_tar_bytes
from dexwm.io import atomic_write_bytes


def write_episode_shard(rig, observations: list[dict], folder: str | Path, name: str) -> str:
    """One episode's observations -> `folder`/`name`.tar with one sample (schema v1)."""
    from dexwm.sim.explore import FPS, LICENCE

    frames = np.stack([o["image"] for o in observations])  # (T, H, W, 3)
    T, H, W, _ = frames.shape
    meta = make_meta(
        source="sim_allegro_mpc", embodiment="allegro", fps=FPS, size=(H, W),
        intrinsics=rig.K(H).tolist(), licence=LICENCE, camera_valid=True,
        camera_extrinsics=rig.camera.extrinsics(), frames=int(T), episode=name,
        joint_names=list(rig.info.joints),
        hands_note="commanded keypoints (FK of the joint targets), camera frame, OpenCV axes",
    )  # fmt: skip
    sample = {
        "__key__": sample_key("sim_allegro_mpc", name, "front", 0),
        "frames.npy": frames,
        "hands.npy": np.stack([o["keypoints"] for o in observations]).astype(np.float32),
        "hands_uv.npy": np.stack([o["keypoints_uv"] for o in observations]).astype(np.float32),
        "hands_valid.npy": np.stack([o["valid"] for o in observations]),
        "camera.npy": np.zeros((T, 6), np.float32),
        "joints.npy": np.stack([o["commanded"] for o in observations]).astype(np.float32),
        "ee.npy": np.stack([o["ee"] for o in observations]).astype(np.float32),
        "meta.json": meta,
    }
    path = Path(folder) / f"{name}.tar"
    atomic_write_bytes(path, samples_to_tar_bytes([sample]))
    return str(path)
