"""Reading DROID-format robot episodes (Franka + Robotiq gripper) into arrays at the video rate.

Layout (the Ctrl-World export of DROID, as in ../shared/data/robot/droid_subset/):
    annotation/<split>/<id>.json   texts, success, video_length, states (T, 7: EE xyz, rpy, gripper at
                                   the video rate), raw 15 Hz fields observation.state.* / action.*
    videos/<split>/<id>/{0,1,2}.mp4  cameras: 0, 1 exterior (static), 2 wrist
Exports from other DROID-style setups carry only video-rate arrays: `states` (T, 7) and `joints`
(T, 8: seven arm joints + gripper), no raw arrays, and sometimes videos one frame longer than the
annotations. Those are read as they are: the commanded joints are taken as the next frame's
observed joints (no action arrays), the frame rate is the annotation's `fps` or the video's, and a
video path missing from the annotation is looked for at videos/<split>/<id>/<camera>.mp4. What an
episode carried and how each array was derived is kept in `DroidEpisode.sources`.

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

from dexwm.data.video import decoder_message
from dexwm.embodiment import euler_xyz_to_matrix, gripper_keypoints, project, world_to_camera
from dexwm.io import InputError

EXTERIOR_CAMERAS = (0, 1)
WRIST_CAMERA = 2
RAW_HZ = 15.0
RAW_FIELDS = (
    "observation.state.cartesian_position",
    "observation.state.joint_position",
    "observation.state.gripper_position",
    "action.joint_position",
)
# No calibration ships with these episodes: nominal ZED 2 / 2i focal length at HD720 (a typical
# factory calibration gives fx = fy = 528 px at 1280 x 720), principal point at the centre.
NOMINAL_K_720P = np.array([[528.0, 0.0, 640.0], [0.0, 528.0, 360.0], [0.0, 0.0, 1.0]])


@dataclass
class DroidEpisode:
    """One episode at the video rate, trimmed to the frames that have both video and state.

    ee: (T, 7) observed end-effector xyz (m, base frame) + Euler xyz + gripper in [0, 1];
    joints: (T, 7) commanded joint positions; joints_observed: (T, 7);
    videos: camera index -> mp4 path; video_frames: camera index -> frames in that file;
    fields: the annotation's keys; sources: array / rate -> where it came from."""

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
    fields: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(self.ee)


def list_episodes(root: str | Path, split: str = "train") -> list[Path]:
    """Annotation files of a DROID-format folder, ordered by episode number. Raises InputError
    (one line: the path, what was expected, the splits that exist) when there are none."""
    root = Path(root)
    folder = root / "annotation" / split
    if not root.exists():
        raise InputError(f"{root}: does not exist")
    if not (root / "annotation").is_dir():
        raise InputError(
            f"{root}: not a DROID-format folder (expected annotation/<split>/*.json and "
            "videos/<split>/<id>/<camera>.mp4)"
        )
    files = list(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        splits = sorted(p.name for p in (root / "annotation").iterdir() if any(p.glob("*.json")))
        have = ", ".join(splits) if splits else "none"
        raise InputError(
            f"{folder}: no episodes (expected <id>.json files) for --split {split}; "
            f"splits with episodes here: {have}"
        )
    return sorted(
        files, key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.stem)
    )


def _array(ann: dict, key: str, annotation: Path, stride: int = 1) -> np.ndarray | None:
    """ann[key] as float64 taken every `stride`-th sample, or None when absent."""
    if key not in ann:
        return None
    try:
        a = np.asarray(ann[key], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{annotation}: {key} is not a numeric array ({e})") from e
    return a[::stride]


def _states(ann: dict, annotation: Path, stride: int) -> tuple[np.ndarray, dict[str, str]]:
    """-> ee (T, 7) at the video rate and the arrays' sources."""
    if "states" in ann:
        states, src = _array(ann, "states", annotation), "states (video rate)"
    elif all(k in ann for k in RAW_FIELDS[0:3:2]):
        cart = _array(ann, RAW_FIELDS[0], annotation, stride)
        grip = _array(ann, RAW_FIELDS[2], annotation, stride)
        n = min(len(cart), len(grip))
        states = np.concatenate([cart[:n], grip[:n, None]], axis=1)
        src = f"observation.state cartesian_position + gripper_position (every {stride})"
    else:
        raise ValueError(f"{annotation}: no end-effector states (neither `states` nor raw arrays)")
    if states.ndim != 2 or states.shape[1] != 7 or len(states) < 2:
        raise ValueError(f"{annotation}: states has shape {states.shape}, expected (T>=2, 7)")
    return states, {"ee": src}


def _joints(
    ann: dict, annotation: Path, stride: int
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """-> commanded joints (T', 7), observed joints (T', 7) at the video rate, their sources."""
    obs = _array(ann, "observation.state.joint_position", annotation, stride)
    src = {"joints_observed": f"observation.state.joint_position (every {stride})"}
    if obs is None:
        joints = _array(ann, "joints", annotation)
        if joints is None:
            raise ValueError(
                f"{annotation}: no joint positions (neither `joints` nor "
                "observation.state.joint_position)"
            )
        if joints.ndim != 2 or joints.shape[1] not in (7, 8) or len(joints) < 2:
            raise ValueError(f"{annotation}: joints has shape {joints.shape}, expected (T, 7 or 8)")
        obs = joints[:, :7]
        src = {"joints_observed": f"joints[:, :7] (video rate; {joints.shape[1]} columns)"}
    cmd = _array(ann, "action.joint_position", annotation, stride)
    if cmd is not None:
        src["joints"] = f"action.joint_position (commanded, every {stride})"
        n = min(len(cmd), len(obs))
        return cmd[:n], obs[:n], src
    # no action arrays: the pose commanded at frame t is the one reached at frame t + 1
    cmd = np.concatenate([obs[1:], obs[-1:]])
    src["joints"] = "next frame's observed joints (no action arrays); the last frame holds"
    return cmd, obs, src


def _video_path(ann: dict, annotation: Path, cam: int) -> Path:
    root, split = annotation.parents[2], annotation.parent.name
    videos = ann.get("videos") or []
    rel = videos[cam].get("video_path") if cam < len(videos) else None
    return root / rel if rel else root / "videos" / split / annotation.stem / f"{cam}.mp4"


def _count_frames(path: Path, annotation: Path, cam: int) -> tuple[int, float]:
    import decord

    if not path.exists() or path.stat().st_size == 0:
        raise ValueError(f"{annotation}: video of camera {cam} missing or empty ({path})")
    try:
        vr = decord.VideoReader(str(path), num_threads=1)
        return len(vr), float(vr.get_avg_fps())
    except Exception as e:
        cause = decoder_message(path) or f"{type(e).__name__}: {e}"
        raise ValueError(f"{annotation}: camera {cam} video unreadable: {cause}") from e


def read_episode(annotation: str | Path, cameras: tuple[int, ...] = (0, 1, 2)) -> DroidEpisode:
    """Read one episode; raises ValueError (with a reason) for one that cannot be used.

    Frame counts of each requested camera's video are measured, and the episode is trimmed to the
    shortest of videos and annotations; every trim is recorded in `notes`."""
    annotation = Path(annotation)
    try:
        ann = json.loads(annotation.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{annotation}: unreadable annotation ({type(e).__name__}: {e})") from e
    if not isinstance(ann, dict):
        raise ValueError(f"{annotation}: unreadable annotation (not a JSON object)")
    raw_key = next((k for k in RAW_FIELDS if k in ann), None)
    T_ann = int(ann.get("video_length") or len(ann.get("states") or ann.get("joints") or []))
    stride = 1
    if raw_key is not None and T_ann:
        stride = max(1, round(int(ann.get("raw_length") or len(ann[raw_key])) / T_ann))
    ee, sources = _states(ann, annotation, stride)
    joints, joints_obs, src = _joints(ann, annotation, stride)
    sources.update(src)
    T, notes = min(len(ee), len(joints)), []
    if len(ee) != len(joints):
        notes.append(f"states have {len(ee)} frames, joints {len(joints)}: trimmed to {T}")

    videos, counts, video_fps = {}, {}, {}
    for cam in cameras:
        videos[cam] = _video_path(ann, annotation, cam)
        counts[cam], video_fps[cam] = _count_frames(videos[cam], annotation, cam)
        if counts[cam] != T:
            what = "more" if counts[cam] > T else "fewer"
            notes.append(
                f"camera {cam}: video has {counts[cam]} frames, {what} than the {T} annotated: "
                f"trimmed to {min(T, counts[cam])}"
            )
    T = min([T, *counts.values()])
    if T < 2:
        raise ValueError(f"{annotation}: fewer than 2 frames with both video and state")
    if raw_key is not None:
        fps, sources["fps"] = RAW_HZ / stride, f"{RAW_HZ:g} Hz raw arrays, every {stride}"
    elif ann.get("fps"):
        fps, sources["fps"] = float(ann["fps"]), "annotation fps"
    elif video_fps and max(video_fps.values()) > 0:
        fps, sources["fps"] = max(video_fps.values()), "video frame rate"
    else:
        raise ValueError(f"{annotation}: no frame rate (no raw arrays, no fps, videos without one)")
    text = ann.get("texts", [""])
    return DroidEpisode(
        episode_id=str(ann.get("episode_id", annotation.stem)),
        annotation=annotation,
        fps=fps,
        ee=ee[:T].copy(),
        joints=joints[:T].copy(),
        joints_observed=joints_obs[:T].copy(),
        videos=videos,
        video_frames=counts,
        text=text[0] if isinstance(text, list) and text else str(text or ""),
        success=bool(ann["success"]) if "success" in ann else None,
        notes=notes,
        fields=sorted(ann),
        sources=sources,
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
