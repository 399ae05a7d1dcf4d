"""Camera geometry for hand keypoints: assumed intrinsics, resize/crop bookkeeping, the PnP fit that
places MediaPipe's metric hand in the camera frame, frame-rate resampling and temporal smoothing.

Conventions: pixels are (u, v) = (x right, y down) with the centre of the top-left pixel at (0.5,
0.5) (MediaPipe's normalised landmarks times the image size); camera frame is OpenCV's (x right,
y down, z forward), metres. Sizes are (height, width).
"""

from __future__ import annotations

import math

import numpy as np

from dexwm.data.schema import in_frame


def intrinsics_from_fov(height: int, width: int, hfov_deg: float = 60.0) -> np.ndarray:
    """Pinhole K (3, 3) of a `width` x `height` image with horizontal field of view `hfov_deg`,
    square pixels, principal point at the image centre. Used when footage has no calibration."""
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def cover_crop(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[float, float, int, int]:
    """Resize that covers `dst_hw` keeping the aspect, then a centred crop.

    Returns (scale_y, scale_x, top, left): a source pixel (u, v) lands at (u*scale_x - left,
    v*scale_y - top). The scales differ slightly because resized sizes are rounded to integers."""
    (h0, w0), (h1, w1) = src_hw, dst_hw
    s = max(h1 / h0, w1 / w0)
    rh, rw = max(h1, round(h0 * s)), max(w1, round(w0 * s))
    return rh / h0, rw / w0, (rh - h1) // 2, (rw - w1) // 2


CROPS = ("center", "hands", "letterbox")


def letterbox(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[float, float, int, int]:
    """Resize that fits inside `dst_hw` keeping the aspect, centred, black bars around: the same
    (scale_y, scale_x, top, left) as cover_crop with top / left <= 0 (minus the bar widths)."""
    (h0, w0), (h1, w1) = src_hw, dst_hw
    s = min(h1 / h0, w1 / w0)
    rh, rw = min(h1, max(1, round(h0 * s))), min(w1, max(1, round(w0 * s)))
    return rh / h0, rw / w0, -((h1 - rh) // 2), -((w1 - rw) // 2)


def hands_crop(
    src_hw: tuple[int, int], dst_hw: tuple[int, int], uv: np.ndarray, valid: np.ndarray
) -> tuple[float, float, int, int]:
    """The cover_crop resize with the crop window slid (along the axis that has room) to keep the
    most hand keypoints inside; ties go to the window nearest the keypoints' median. One window
    for all the frames given, so the intrinsics of a segment stay fixed. uv (..., 21, 2) source
    pixels, valid (...) the hands to keep; no valid hand: the centre crop."""
    sy, sx, top, left = cover_crop(src_hw, dst_hw)
    pts = uv[valid].reshape(-1, 2) * np.array([sx, sy])  # resized pixels
    pts = pts[np.isfinite(pts).all(-1)]
    slack_v = round(src_hw[0] * sy) - dst_hw[0]  # resized minus stored size
    slack_u = round(src_hw[1] * sx) - dst_hw[1]
    axis = 0 if slack_u >= slack_v else 1  # slide along u (wide source) or v (tall source)
    slack, size = (slack_u, dst_hw[1]) if axis == 0 else (slack_v, dst_hw[0])
    if len(pts) == 0 or slack <= 0:
        return sy, sx, top, left
    x = pts[:, axis]
    offsets = np.arange(slack + 1)
    inside = ((x[None] >= offsets[:, None]) & (x[None] < offsets[:, None] + size)).sum(1)
    best = offsets[inside == inside.max()]
    want = np.clip(np.median(x) - size / 2, 0, slack)
    off = int(best[np.argmin(np.abs(best - want))])
    return (sy, sx, top, off) if axis == 0 else (sy, sx, off, left)


def frame_geometry(
    mode: str,
    src_hw: tuple[int, int],
    dst_hw: tuple[int, int],
    uv: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> tuple[float, float, int, int]:
    """Source -> stored frame for one segment, by `mode` (one of CROPS): "center" (cover_crop),
    "hands" (hands_crop over the segment's detections uv (t, 2, 21, 2), valid (t, 2)) or
    "letterbox"."""
    if mode == "letterbox":
        return letterbox(src_hw, dst_hw)
    if mode == "hands" and uv is not None and valid is not None:
        return hands_crop(src_hw, dst_hw, uv, valid)
    if mode not in CROPS:
        raise ValueError(f"unknown crop {mode!r}; choose one of {CROPS}")
    return cover_crop(src_hw, dst_hw)


def off_frame_counts(uv: np.ndarray, valid: np.ndarray, size: tuple[int, int]) -> dict[str, int]:
    """How many valid hands (T, 2) have keypoints uv (T, 2, 21, 2) (stored-frame pixels) outside
    the stored frame of `size`: what a sample's meta.json (and, summed, the manifest) carries."""
    off = valid[..., None] & ~in_frame(uv, size)  # (T, 2, 21)
    return {
        "valid_hands": int(valid.sum()),
        "hands_partly_off_frame": int(off.any(-1).sum()),
        "valid_keypoints": int(valid.sum()) * uv.shape[-2],
        "keypoints_off_frame": int(off.sum()),
    }


def resize_crop(
    frames: np.ndarray,
    dst_hw: tuple[int, int],
    geom: tuple[float, float, int, int] | None = None,
) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, *dst_hw, 3): aspect-preserving resize, then the crop (or, with
    negative offsets, the black bars) of `geom` (default: cover_crop, a centred crop)."""
    import cv2

    sy, sx, top, left = geom if geom is not None else cover_crop(frames.shape[1:3], dst_hw)
    rh, rw = round(frames.shape[1] * sy), round(frames.shape[2] * sx)
    if (rh, rw) == frames.shape[1:3]:
        out = frames
    else:
        interp = cv2.INTER_AREA if rh < frames.shape[1] else cv2.INTER_LINEAR
        out = np.stack([cv2.resize(f, (rw, rh), interpolation=interp) for f in frames])
    if top < 0 or left < 0:  # letterbox: paste into black
        canvas = np.zeros((len(out), *dst_hw, 3), np.uint8)
        canvas[:, -top : -top + rh, -left : -left + rw] = out
        return canvas
    return np.ascontiguousarray(out[:, top : top + dst_hw[0], left : left + dst_hw[1]])


def transform_uv(uv: np.ndarray, geom: tuple[float, float, int, int]) -> np.ndarray:
    """Pixels (..., 2) of the source image -> pixels of the resized-and-cropped image."""
    sy, sx, top, left = geom
    return uv * np.array([sx, sy], dtype=uv.dtype) - np.array([left, top], dtype=uv.dtype)


def transform_intrinsics(K: np.ndarray, geom: tuple[float, float, int, int]) -> np.ndarray:
    """Intrinsics of the source image -> intrinsics of the resized-and-cropped image."""
    sy, sx, top, left = geom
    K2 = np.array(K, dtype=np.float64)
    K2[0] *= sx
    K2[1] *= sy
    K2[0, 2] -= left
    K2[1, 2] -= top
    return K2


def resample_indices(n_frames: int, src_fps: float, fps: float | None) -> np.ndarray:
    """Source frame indices for a clip of `n_frames` at `src_fps` resampled to `fps` (nearest
    frame; `None` or a rate >= the source's keeps every frame)."""
    if fps is None or fps <= 0 or src_fps <= 0 or fps >= src_fps - 1e-6:
        return np.arange(n_frames)
    t = np.arange(0.0, n_frames / src_fps, 1.0 / fps)  # seconds
    idx = np.round(t * src_fps).astype(np.int64)
    return np.unique(np.clip(idx, 0, n_frames - 1))


def fit_hand_pnp(
    world: np.ndarray, uv: np.ndarray, K: np.ndarray
) -> tuple[np.ndarray, float] | None:
    """Place a metric hand in the camera frame: find the rigid pose (R, t) whose projection of the
    world landmarks (21, 3) best matches the image landmarks (21, 2) under K (cv2.solvePnP, SQPnP
    global solve then Levenberg-Marquardt refinement). Returns (R @ world + t as (21, 3), RMS
    reprojection error in px), or None if the solve fails or puts the hand behind the camera."""
    import cv2

    obj = np.ascontiguousarray(world, dtype=np.float64).reshape(-1, 1, 3)
    img = np.ascontiguousarray(uv, dtype=np.float64).reshape(-1, 1, 2)
    K = np.asarray(K, dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        return None
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, None, rvec, tvec)
    R, _ = cv2.Rodrigues(rvec)
    cam = world @ R.T + tvec.reshape(1, 3)  # (21, 3)
    if not np.isfinite(cam).all() or (cam[:, 2] <= 1e-3).any():
        return None
    proj = cam[:, :2] / cam[:, 2:3] * np.diag(K)[:2] + K[:2, 2]  # (21, 2)
    rms = float(np.sqrt(np.mean(np.sum((proj - uv) ** 2, axis=-1))))
    return cam, rms


def fit_track(
    world: np.ndarray, uv: np.ndarray, valid: np.ndarray, K: np.ndarray, max_rms_px: float = np.inf
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PnP for every valid hand of a track: world (T, 2, 21, 3), uv (T, 2, 21, 2) px, valid (T, 2).

    Returns camera-frame keypoints (T, 2, 21, 3) float32, the updated valid mask (a failed solve
    or a reprojection error above `max_rms_px` turns a hand invalid) and the RMS error (T, 2)
    (0 where invalid). Invalid entries are zeros."""
    T = world.shape[0]
    cam = np.zeros((T, 2, 21, 3), np.float32)
    rms = np.zeros((T, 2), np.float32)
    valid = valid.copy()
    for t, h in zip(*np.nonzero(valid)):
        fit = fit_hand_pnp(world[t, h], uv[t, h], K)
        if fit is None or fit[1] > max_rms_px:
            valid[t, h] = False
            continue
        cam[t, h], rms[t, h] = fit
    return cam, valid, rms


def valid_runs(valid: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges of consecutive True entries of a 1-D mask."""
    v = np.concatenate([[False], np.asarray(valid, bool), [False]])
    edges = np.flatnonzero(np.diff(v.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def smooth_track(x: np.ndarray, valid: np.ndarray, window: int, polyorder: int = 2) -> np.ndarray:
    """Savitzky-Golay smoothing along time of x (T, 2, ...) inside each run of consecutive valid
    frames of each hand; runs shorter than `window` and invalid entries are left as they are, so
    smoothing never bridges a gap or invents a detection. window <= 1 returns x unchanged."""
    if window <= 1:
        return x
    from scipy.signal import savgol_filter

    window += 1 - window % 2  # odd
    out = x.copy()
    for h in range(x.shape[1]):
        for a, b in valid_runs(valid[:, h]):
            if b - a >= window:
                out[a:b, h] = savgol_filter(x[a:b, h], window, min(polyorder, window - 1), axis=0)
    return out
