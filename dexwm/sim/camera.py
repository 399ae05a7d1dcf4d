"""A fixed pinhole camera: MuJoCo's camera frame <-> the OpenCV frame of the shard schema.

MuJoCo cameras look down their -z axis with y up; the schema stores points in the OpenCV frame
(x right, y down, z forward). Pixels use the continuous convention of MuJoCo's renderer and
MediaPipe's normalised landmarks: pixel (i, j) covers [j, j+1) x [i, i+1), so the image centre is
(W/2, H/2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dexwm.embodiment import matrix_to_euler_xyz, project, world_to_camera

# MuJoCo camera axes (x right, y up, z backward) -> OpenCV axes (x right, y down, z forward)
MJ_TO_CV = np.diag([1.0, -1.0, -1.0])


def look_at(pos: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Rotation (3, 3) whose columns are the MuJoCo camera axes in the world for a camera at
    `pos` looking at `target`."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    upv = np.cross(right, forward)
    return np.stack([right, upv, -forward], axis=1)


@dataclass(frozen=True)
class Camera:
    """pos (3,) in the world; R (3, 3) columns = OpenCV camera axes in the world; fovy degrees."""

    pos: np.ndarray
    R: np.ndarray
    fovy: float

    @classmethod
    def from_mujoco(cls, pos: np.ndarray, xmat: np.ndarray, fovy: float) -> Camera:
        """From a MuJoCo camera's world position and orientation (cam_xpos, cam_xmat)."""
        R = np.asarray(xmat, float).reshape(3, 3) @ MJ_TO_CV
        return cls(np.asarray(pos, float).copy(), R, float(fovy))

    def K(self, size: int | tuple[int, int]) -> np.ndarray:
        """Intrinsics (3, 3) for frames of `size` = side or (height, width)."""
        h, w = (size, size) if np.isscalar(size) else size
        f = 0.5 * h / np.tan(np.deg2rad(self.fovy) / 2)  # fovy is vertical, pixels are square
        return np.array([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])

    def to_camera(self, points_world: np.ndarray) -> np.ndarray:
        """(..., 3) world points -> (..., 3) OpenCV camera-frame points (metres)."""
        return world_to_camera(points_world, self.pos, self.R)

    def pixels(self, points_cam: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
        """(..., 3) camera-frame points -> (..., 2) pixel coordinates (u right, v down)."""
        return project(points_cam, self.K(size))

    def extrinsics(self) -> dict:
        """JSON-ready pose in the world: position, rotation (columns = x right, y down, z fwd),
        and Euler xyz (scipy 'xyz') of that rotation."""
        return {
            "position": self.pos.tolist(),
            "rotation": self.R.tolist(),
            "euler_xyz": matrix_to_euler_xyz(self.R).tolist(),
            "convention": "opencv (x right, y down, z forward); world->cam: (p - position) @ R",
        }


@dataclass(frozen=True)
class CalibratedCamera(Camera):
    """A camera with measured intrinsics (a real rig's): `intrinsics` (3, 3) for frames of
    `image_size` = (height, width); `K(size)` rescales them to other frame sizes. `fovy` follows
    from fy, so the rest of `Camera` works unchanged."""

    intrinsics: np.ndarray | None = None
    image_size: tuple[int, int] = (0, 0)

    @classmethod
    def from_calibration(
        cls,
        intrinsics: np.ndarray,
        image_size: tuple[int, int],
        position: np.ndarray,
        rotation: np.ndarray,
    ) -> CalibratedCamera:
        """From K (3, 3) at frames of `image_size` (H, W) and the camera pose in the world (the
        robot base frame): position (3,), rotation (3, 3) whose columns are the OpenCV camera
        axes (x right, y down, z forward)."""
        K = np.asarray(intrinsics, float).copy()
        h = float(image_size[0])
        fovy = float(np.rad2deg(2 * np.arctan(0.5 * h / K[1, 1])))
        pos, R = np.asarray(position, float).copy(), np.asarray(rotation, float).copy()
        return cls(pos, R, fovy, K, (int(image_size[0]), int(image_size[1])))

    def K(self, size: int | tuple[int, int]) -> np.ndarray:
        """Intrinsics (3, 3) for frames of `size` = side or (height, width)."""
        h, w = (size, size) if np.isscalar(size) else size
        sy, sx = h / self.image_size[0], w / self.image_size[1]
        return self.intrinsics * np.array([[sx], [sy], [1.0]])
