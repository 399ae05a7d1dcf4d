"""Video bytes <-> uint8 frame arrays: H.264 encoding through imageio-ffmpeg, decoding with decord."""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np


class VideoDecodeError(RuntimeError):
    """A video that cannot be decoded (corrupt, truncated, empty, unsupported)."""


def encode_mp4(frames: np.ndarray, fps: float, crf: int = 18) -> bytes:
    """(T, H, W, 3) uint8 -> H.264 mp4 bytes (yuv420p; H and W must be even)."""
    import imageio_ffmpeg

    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T,H,W,3), got {frames.dtype} {frames.shape}")
    T, H, W, _ = frames.shape
    if H % 2 or W % 2:
        raise ValueError(f"H.264 yuv420p needs even sizes, got {H}x{W}")
    fd, path = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        writer = imageio_ffmpeg.write_frames(
            path,
            (W, H),
            fps=fps,
            codec="libx264",
            quality=None,
            macro_block_size=1,
            output_params=["-crf", str(crf), "-g", "10"],
            ffmpeg_log_level="error",
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def decode_video(
    src: bytes | str | os.PathLike,
    indices: np.ndarray | list[int] | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode a video (bytes or path) with decord -> uint8 (T, H, W, 3).

    `indices` selects frames (default all); `size` = (height, width) resizes while decoding.
    Raises VideoDecodeError naming the source on any failure.
    """
    import decord

    name = "<bytes>" if isinstance(src, bytes) else str(src)
    if (
        isinstance(src, bytes)
        and len(src) == 0
        or not isinstance(src, bytes)
        and (not os.path.exists(src) or os.path.getsize(src) == 0)
    ):
        raise VideoDecodeError(f"{name}: empty or missing video")
    h, w = size if size is not None else (-1, -1)
    try:
        uri = io.BytesIO(src) if isinstance(src, bytes) else str(src)
        vr = decord.VideoReader(uri, width=w, height=h, num_threads=1)
        n = len(vr)
        if n == 0:
            raise VideoDecodeError(f"{name}: no frames")
        idx = list(range(n)) if indices is None else [int(i) for i in indices]
        if idx and (min(idx) < 0 or max(idx) >= n):
            raise VideoDecodeError(f"{name}: frame index out of range (video has {n} frames)")
        return vr.get_batch(idx).asnumpy()
    except VideoDecodeError:
        raise
    except Exception as e:  # decord raises DECORDError / RuntimeError with C++ messages
        raise VideoDecodeError(f"{name}: cannot decode ({type(e).__name__}: {e})") from e
