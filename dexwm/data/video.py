"""Video bytes <-> uint8 frame arrays: H.264 encoding through imageio-ffmpeg, decoding with decord."""

from __future__ import annotations

import io
import os
import re
import sys
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
        cause = decoder_message(src)
        cause = f"{cause} ({type(e).__name__})" if cause else f"{type(e).__name__}: {e}"
        raise VideoDecodeError(f"{name}: cannot decode: {cause}") from e


_FFMPEG_LINE = re.compile(r"^\[[^\]]*? @ 0x[0-9a-fA-F]+\]\s*(.+)$")  # [mov,mp4,... @ 0x55..] msg
_DECORD_LINE = re.compile(r"ERROR opening: .*?, (.+)$")  # decord's own log line


def decoder_message(src: bytes | str | os.PathLike) -> str:
    """Why FFmpeg (inside decord) cannot open `src`, as it said it, e.g. "moov atom not found;
    Invalid data found when processing input"; "" when it opens or FFmpeg said nothing.

    decord's exception only says "Error reading <file>": FFmpeg's own message goes to file
    descriptor 2. So, once a video has failed, it is opened again with that descriptor pointed at a
    temporary file. Lines that are not FFmpeg's or decord's are written back to stderr."""
    import decord

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            decord.VideoReader(io.BytesIO(src) if isinstance(src, bytes) else str(src))
        except Exception:
            pass
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        text = log.read().decode(errors="replace")
    found, other = [], []
    for line in text.splitlines():
        m = _DECORD_LINE.search(line) or _FFMPEG_LINE.match(line.strip())
        if m is None:
            other.append(line)
        elif m.group(1).strip() not in found:
            found.append(m.group(1).strip())
    if any(x.strip() for x in other):
        sys.stderr.write("\n".join(other) + "\n")
    return "; ".join(found)
