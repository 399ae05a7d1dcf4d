"""DROID-format episodes -> samples (schema v1), one per camera (and segment).

The gripper becomes DexWM's right "hand" (wrist = end-effector position, 20 dummy finger points on
circles at the end-effector height whose radii follow the gripper state; left hand absent). The
episodes carry no camera calibration, so by default the keypoints stay in the robot BASE frame
(meta `keypoint_frame: robot_base`, `hands_uv_valid: false`, uv zeros): the exterior cameras are
static, so camera.npy is zeros with `camera_valid: true`, and keypoint differences (DexWM's
actions) differ from camera-frame ones by one fixed unknown rotation per camera. `extrinsics`
(JSON: {"<episode_id>": {"<camera>": [x, y, z, rx, ry, rz]}}, camera pose in the base frame,
OpenCV axes) moves them into that camera's frame and projects them. The wrist camera (2) moves with
the gripper and its pose is unknown: when asked for, it gets `camera_valid: false`. The command is
`python -m data_prep.droid`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dexwm.data.schema import make_meta, sample_key
from dexwm.data.shards import ShardJob, Skip, record_notes
from dexwm.data.video import VideoDecodeError, decode_video, encode_mp4
from dexwm.io import InputError
from dexwm.prep.droid import (
    WRIST_CAMERA,
    droid_intrinsics,
    gripper_hand_keypoints,
    list_episodes,
    read_episode,
)
from dexwm.prep.hand_fit import cover_crop, resample_indices, resize_crop, transform_intrinsics


@dataclass(frozen=True, kw_only=True)
class DroidConfig:
    """How each episode is turned into samples.

    Args:
        cameras: camera indices to write (0, 1 exterior; 2 wrist).
        fps: output frame rate (<= the episode's, nearest frames); None keeps every frame.
        size: stored frame size (height, width), even; default: as recorded.
        segment_frames: frames per sample; 0 = one sample per episode and camera.
        frames: "mp4" (H.264) or "npy" (raw uint8).
        source: recorded in every sample's meta.json; also starts each key.
        licence: recorded in every sample's meta.json.
    """

    cameras: tuple[int, ...] = (0, 1)
    fps: float | None = None
    size: tuple[int, int] | None = None
    segment_frames: int = 0
    frames: str = "mp4"
    source: str = "droid"
    licence: str = "CC-BY-4.0"

    def __post_init__(self) -> None:
        if self.size is not None and (self.size[0] % 2 or self.size[1] % 2):
            raise ValueError(f"--size must be even (H.264), got {self.size}")


@dataclass(frozen=True, kw_only=True)
class DroidJob(ShardJob, DroidConfig):
    """DROID-format robot episodes -> webdataset shards (schema v1).

    Args:
        root: folder with annotation/<split>/*.json and videos/<split>/<id>/<camera>.mp4.
        split: which split to read: the folder name under annotation/ and videos/ (e.g. train,
            val); the error for a missing split lists the splits the root has.
        extrinsics: JSON {episode_id: {camera: [x, y, z, rx, ry, rz]}}: camera poses in the robot
            base frame; without it keypoints stay in the base frame.
    """

    root: Path
    split: str = "train"
    extrinsics: Path | None = None


def process_episode(payload: tuple[str, str, dict | None, DroidConfig]) -> list[dict]:
    """One (annotation file, item key, that episode's camera extrinsics or None, config) ->
    samples."""
    ann_path, key, extrinsics, cfg = payload
    try:
        ep = read_episode(ann_path, cfg.cameras)
    except ValueError as e:
        raise Skip(str(e)) from e
    idx = resample_indices(ep.length, ep.fps, cfg.fps)  # (T,) frames kept
    fps = min(cfg.fps or ep.fps, ep.fps)
    seg = cfg.segment_frames if cfg.segment_frames > 0 else len(idx)
    ee, joints = ep.ee[idx], ep.joints[idx]
    samples = []
    for cam, video in ep.videos.items():
        try:
            frames = decode_video(video, idx)  # (T, h, w, 3)
        except VideoDecodeError as e:
            raise Skip(str(e)) from e
        src_hw = frames.shape[1:3]
        size = tuple(cfg.size) if cfg.size else src_hw
        geom = cover_crop(src_hw, size)
        frames = resize_crop(frames, size) if size != src_hw else frames
        K = transform_intrinsics(droid_intrinsics(src_hw), geom)
        static = cam != WRIST_CAMERA
        ext = extrinsics.get(str(cam)) if extrinsics and static else None
        hands, uv, valid = gripper_hand_keypoints(
            ee, None if ext is None else np.asarray(ext, float), K
        )
        for k, a in enumerate(range(0, len(idx), seg)):
            sl = slice(a, a + seg)
            if len(idx[sl]) < 2:
                ep.notes.append(f"camera {cam} segment {k}: dropped, 1 frame")
                continue
            meta = make_meta(
                source=cfg.source,
                embodiment="gripper",
                fps=fps,
                size=size,
                intrinsics=K.round(4).tolist(),
                licence=cfg.licence,
                camera_valid=static,
                intrinsics_assumed=True,
                intrinsics_note="no calibration in the episode: nominal ZED 2 HD720 fx=fy=528 px "
                "scaled to the frame size (frame taken as a resize of 1280x720)",
                keypoint_frame="camera" if ext is not None else "robot_base",
                hands_uv_valid=ext is not None,
                camera_extrinsics=ext,
                camera_note="exterior camera: static" if static else "wrist camera: pose unknown",
                gripper_mapping="DexWM: wrist=EE, 5 angles x 4 radii at EE height, "
                "open 3/4/5/6 cm, closed (gripper>=0.5) 3/4/3.5/3 cm",
                annotation_fields=ep.fields,
                ee_source=ep.sources["ee"],
                joints_source=ep.sources["joints"],
                joints_observed_source=ep.sources["joints_observed"],
                fps_source=ep.sources["fps"],
                actions_derived=f"joints.npy (commanded): {ep.sources['joints']}; DexWM actions: "
                "differences of the gripper keypoints made from ee.npy, at load time",
                joints_observed=ep.joints_observed[idx][sl].round(5).tolist(),
                episode_id=ep.episode_id,
                camera=cam,
                text=ep.text,
                success=ep.success,
                segment=k,
                segment_start_frame=a,
                source_frames=idx[sl].tolist(),
                original_video=str(video),
                item_key=key,
                notes=ep.notes,
            )
            samples.append(
                {
                    "__key__": sample_key(cfg.source, key, f"cam{cam}", k),
                    "frames.mp4" if cfg.frames == "mp4" else "frames.npy": (
                        encode_mp4(frames[sl], fps) if cfg.frames == "mp4" else frames[sl]
                    ),
                    "hands.npy": hands[sl],
                    "hands_uv.npy": uv[sl],
                    "hands_valid.npy": valid[sl],
                    "camera.npy": np.zeros((len(idx[sl]), 6), np.float32),
                    "joints.npy": joints[sl].astype(np.float32),
                    "ee.npy": ee[sl].astype(np.float32),
                    "meta.json": meta,
                }
            )
    return samples


def run(job: DroidJob) -> dict:
    """Convert the episodes to shards (resumable); returns the manifest."""
    episodes = list_episodes(job.root, job.split)  # InputError: no such root or split
    ext = {}
    if job.extrinsics:
        try:
            ext = json.loads(Path(job.extrinsics).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{job.extrinsics}: cannot read the extrinsics JSON ({e})") from e
    items = [(p.stem, (str(p), p.stem, ext.get(p.stem), job)) for p in episodes]
    job.run(items, process_episode, desc="episodes", extra={"extrinsics": ext})
    return record_notes(job.out)
