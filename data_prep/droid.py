"""DROID-format robot episodes -> webdataset shards (schema v1), one sample per camera (and segment).

Usage:
    python -m data_prep.droid --root ../shared/data/robot/droid_subset --out shards/droid --workers 2 \
        [--cameras '[0, 1]'] [--extrinsics cams.json] [--size '[192, 320]'] [--segment_frames 0]

The gripper becomes DexWM's right "hand" (wrist = end-effector position, 20 dummy finger points on
circles at the end-effector height whose radii follow the gripper state; left hand absent). The
episodes carry no camera calibration, so by default the keypoints stay in the robot BASE frame
(meta `keypoint_frame: robot_base`, `hands_uv_valid: false`, uv zeros): the exterior cameras are
static, so camera.npy is zeros with `camera_valid: true`, and keypoint differences (DexWM's
actions) differ from camera-frame ones by one fixed unknown rotation per camera. `--extrinsics`
(JSON: {"<episode_id>": {"<camera>": [x, y, z, rx, ry, rz]}}, camera pose in the base frame,
OpenCV axes) moves them into that camera's frame and projects them. The wrist camera (2) moves with
the gripper and its pose is unknown: when asked for, it gets `camera_valid: false`.
Episodes whose videos and annotations disagree in length are trimmed (manifest "notes"); unusable
ones are skipped with the reason. Re-running the command resumes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data_prep.human_video import cli_args, record_notes
from dexwm.data.schema import make_meta, sample_key
from dexwm.data.shards import Skip, run_shard_job
from dexwm.data.video import VideoDecodeError, decode_video, encode_mp4
from dexwm.prep.droid import (
    WRIST_CAMERA,
    droid_intrinsics,
    gripper_hand_keypoints,
    list_episodes,
    read_episode,
)
from dexwm.prep.hand_fit import cover_crop, resample_indices, resize_crop, transform_intrinsics


@dataclass(frozen=True)
class DroidConfig:
    cameras: tuple[int, ...] = (0, 1)
    fps: float | None = None
    size: tuple[int, int] | None = None
    segment_frames: int = 0
    frames: str = "mp4"
    source: str = "droid"
    licence: str = "CC-BY-4.0"


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
                ee_source="observation.state (cartesian_position + gripper_position)",
                joints_source="action.joint_position (commanded)",
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


def main(
    root: Path,
    out: Path,
    split: str = "train",
    cameras: tuple[int, ...] = DroidConfig.cameras,
    extrinsics: Path | None = None,
    fps: float | None = DroidConfig.fps,
    size: tuple[int, int] | None = DroidConfig.size,
    segment_frames: int = DroidConfig.segment_frames,
    frames: str = DroidConfig.frames,
    source: str = DroidConfig.source,
    licence: str = DroidConfig.licence,
    items_per_shard: int = 16,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Convert DROID-format episodes to shards; returns the manifest.

    Args:
        root: folder with annotation/<split>/*.json and videos/<split>/<id>/<camera>.mp4.
        out: output folder for shards and manifest.json.
        cameras: camera indices to write (0, 1 exterior; 2 wrist).
        extrinsics: JSON {episode_id: {camera: [x, y, z, rx, ry, rz]}}: camera poses in the robot
            base frame; without it keypoints stay in the base frame.
        fps: output frame rate (<= the episode's, nearest frames); None keeps every frame.
        size: stored frame size (height, width), even; default: as recorded.
        segment_frames: frames per sample; 0 = one sample per episode and camera.
        workers: parallel processes.
        overwrite: replace a different earlier job in `out`.
    """
    if size is not None and (size[0] % 2 or size[1] % 2):
        raise ValueError(f"--size must be even (H.264), got {size}")
    cfg = DroidConfig(
        cameras=tuple(cameras),
        fps=fps,
        size=tuple(size) if size else None,
        segment_frames=segment_frames,
        frames=frames,
        source=source,
        licence=licence,
    )
    ext = json.loads(Path(extrinsics).read_text()) if extrinsics else {}
    episodes = list_episodes(root, split)
    if not episodes:
        raise FileNotFoundError(f"no annotation/{split}/*.json under {root}")
    items = [(p.stem, (str(p), p.stem, ext.get(p.stem), cfg)) for p in episodes]
    config = {**asdict(cfg), "root": str(root), "split": split, "extrinsics": ext}
    run_shard_job(
        items,
        process_episode,
        out,
        config=config,
        items_per_shard=items_per_shard,
        workers=workers,
        desc="episodes",
        overwrite=overwrite,
        progress=progress,
    )
    return record_notes(out)


if __name__ == "__main__":
    import sys

    from jsonargparse import CLI

    manifest = CLI(main, as_positional=False, args=cli_args(sys.argv[1:]))
    print(json.dumps({"counts": manifest["counts"], "skipped": manifest["skipped"]}, indent=1))
