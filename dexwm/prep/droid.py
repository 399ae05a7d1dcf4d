"""Reading DROID-format robot episodes (Franka + Robotiq gripper) into arrays at the video rate.

Layout (the Ctrl-World export of DROID, as in ../shared/data/robot/droid_subset/):
    annotation/<split>/<id>.json   texts, success, video_length, states (T, 7: EE xyz, rpy, gripper at
                                   the video rate), raw 15 Hz fields observation.state.* / action.*
    videos/<split>/<id>/{0,1,2}.mp4  cameras: 0, 1 exterior (static), 2 wrist
Euler angles are scipy's extrinsic 'xyz' (DROID's convention, same as the shard schema); the
gripper position is 0 open .. 1 closed.

The annotations carry no camera calibration. `gripper_hand_keypoints` therefore maps the gripper
into DexWM's hand-keypoint space (dexwm.embodiment.gripper_keypoints) in the ROBOT BASE frame, and
moves the points into a camera frame only when that camera's extrinsics are supplied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dexwm.embodiment import euler_xyz_to_matrix, gripper_keypoints, project, world_to_camera

EXTERIOR_CAMERAS = (0, 1)
WRIST_CAMERA = 2
RAW_HZ = 15.0
# No calibration ships with these episodes: nominal ZED 2 / 2i focal length at HD720 (a typical
# factory calibration gives fx = fy = 528 px at 1280 x 720), principal point at the centre.
NOMINAL_K_720P = np.array([[528.0, 0.0, 640.0], [0.0, 528.0, 360.0], [0.0, 0.0, 1.0]])


@dataclass
class DroidEpisode:
    """One episode at the video rate, trimmed to the frames that have both video and state.

    ee: (T, 7) observed end-effector xyz (m, base frame) + Euler xyz + gripper in [0, 1];
    joints: (T, 7) commanded joint positions (action.joint_position); joints_observed: (T, 7);
    videos: camera index -> mp4 path; video_frames: camera index -> frames in that file."""

    episode_id: str
    annotation: Path
    fps: float
    ee: np.ndarray
    joints: np.ndarray
    joints_observed: np.ndarray
    videos: dict[int, Path]
    video_frames: dict[int, int]
    text: str = ""
    success: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.ee)


def list_episodes(root: str | Path, split: str = "train") -> list[Path]:
    """Annotation files of a DROID-format folder, ordered by episode number."""
    files = (Path(root) / "annotation" / split).glob("*.json")
    return sorted(
        files, key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.stem)
    )


def _at_video_rate(ann: dict, key: str, stride: int, T: int) -> np.ndarray | None:
    if key not in ann:
        return None
    a = np.asarray(ann[key], dtype=np.float64)
    return a[::stride][:T]


def read_episode(annotation: str | Path, cameras: tuple[int, ...] = (0, 1, 2)) -> DroidEpisode:
    """Read one episode; raises ValueError (with a reason) for one that cannot be used.

    Frame counts of each requested camera's video are measured, and the episode is trimmed to the
    shortest of videos and annotations; every trim is recorded in `notes`."""
    import decord

    annotation = Path(annotation)
    root = annotation.parents[2]
    try:
        ann = json.loads(annotation.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{annotation}: unreadable annotation ({type(e).__name__}: {e})") from e
    T_ann = int(ann.get("video_length") or len(ann.get("states", [])))
    raw = int(ann.get("raw_length") or len(ann["observation.state.joint_position"]))
    stride = max(1, round(raw / T_ann)) if T_ann else 1
    if "states" in ann:
        states = np.asarray(ann["states"], dtype=np.float64)  # (T, 7) at the video rate
    else:
        cart = _at_video_rate(ann, "observation.state.cartesian_position", stride, T_ann)
        grip = _at_video_rate(ann, "observation.state.gripper_position", stride, T_ann)
        states = np.concatenate([cart, grip[:, None]], axis=1)
    if states.ndim != 2 or states.shape[1] != 7 or len(states) < 2:
        raise ValueError(f"{annotation}: states has shape {states.shape}, expected (T>=2, 7)")
    joints = _at_video_rate(ann, "action.joint_position", stride, len(states))
    joints_obs = _at_video_rate(ann, "observation.state.joint_position", stride, len(states))
    T, notes = len(states), []
    for name, a in (
        ("action.joint_position", joints),
        ("observation.state.joint_position", joints_obs),
    ):
        if a is None or len(a) < T:
            raise ValueError(f"{annotation}: {name} missing or shorter than states")

    videos, counts = {}, {}
    for cam in cameras:
        rel = ann["videos"][cam]["video_path"] if cam < len(ann.get("videos", [])) else None
        path = root / rel if rel else None
        if path is None or not path.exists() or path.stat().st_size == 0:
            raise ValueError(f"{annotation}: video of camera {cam} missing or empty ({path})")
        try:
            counts[cam] = len(decord.VideoReader(str(path), num_threads=1))
        except Exception as e:
            raise ValueError(f"{annotation}: camera {cam} video unreadable ({e})") from e
        videos[cam] = path
        if counts[cam] != T:
            what = "more" if counts[cam] > T else "fewer"
            notes.append(
                f"camera {cam}: video has {counts[cam]} frames, {what} than the {T} annotated: "
                f"trimmed to {min(T, counts[cam])}"
            )
    T = min([T, *counts.values()])
    if T < 2:
        raise ValueError(f"{annotation}: fewer than 2 frames with both video and state")
    text = ann.get("texts", [""])
    return DroidEpisode(
        episode_id=str(ann.get("episode_id", annotation.stem)),
        annotation=annotation,
        fps=RAW_HZ / stride,
        ee=states[:T].copy(),
        joints=joints[:T].copy(),
        joints_observed=joints_obs[:T].copy(),
        videos=videos,
        video_frames=counts,
        text=text[0] if isinstance(text, list) and text else str(text or ""),
        success=bool(ann["success"]) if "success" in ann else None,
        notes=notes,
    )


def droid_intrinsics(size: tuple[int, int]) -> np.ndarray:
    """Assumed K for a DROID frame stored at `size` (height, width): the nominal 1280 x 720 K
    scaled per axis, i.e. the frame taken as a resize (no crop) of the full ZED image."""
    K = NOMINAL_K_720P.copy()
    K[0] *= size[1] / 1280.0
    K[1] *= size[0] / 720.0
    return K


def gripper_hand_keypoints(
    ee: np.ndarray, extrinsics: np.ndarray | None = None, K: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DexWM's gripper-as-right-hand mapping for ee (T, 7) -> (hands (T, 2, 21, 3), uv (T, 2, 21, 2),
    valid (T, 2)); the left hand is absent (zeros, invalid).

    Without extrinsics the keypoints stay in the robot base frame and uv is zeros. With a static
    camera pose `extrinsics` (6: position + Euler xyz of the camera in the base frame, OpenCV
    camera axes) they are moved into that camera frame and projected with K."""
    T = len(ee)
    kp = gripper_keypoints(ee[:, :3], ee[:, 6])  # (T, 21, 3) base frame
    hands = np.zeros((T, 2, 21, 3), np.float32)
    uv = np.zeros((T, 2, 21, 2), np.float32)
    valid = np.zeros((T, 2), bool)
    if extrinsics is not None:
        R = euler_xyz_to_matrix(np.asarray(extrinsics[3:6]))
        kp = world_to_camera(kp, np.asarray(extrinsics[:3]), R)  # (T, 21, 3) camera frame
        uv[:, 1] = project(kp, K)
        valid[:, 1] = (kp[..., 2] > 0).all(-1)  # behind the camera: no trusted projection
    else:
        valid[:, 1] = True
    hands[:, 1] = kp
    hands[~valid], uv[~valid] = 0.0, 0.0
    return hands, uv, valid
