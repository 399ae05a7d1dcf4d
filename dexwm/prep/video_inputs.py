"""Reading human-video inputs of any kind frame-range by frame-range: video files (mp4, webm, mov,
mkv, avi: decord), GIFs (Pillow: decord cannot measure their length), and folders of images
(jpg/png, sorted by name, at a frame rate the caller states). Every failure raises
`VideoDecodeError` with a reason, so a preparation job can skip the input and record why.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dexwm.data.video import VideoDecodeError, decode_video, decoder_message

VIDEO_EXTS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
GIF_EXTS = (".gif",)
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def list_inputs(root: str | Path) -> list[Path]:
    """Video files, GIFs and image folders under `root` (recursively), in a stable order. A folder
    counts as a clip when it directly holds image files. `root` may itself be one input."""
    root = Path(root)
    if root.is_file():
        return [root]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        d = Path(dirpath)
        if any(f.lower().endswith(IMAGE_EXTS) for f in filenames):
            found.append(d)
        found += [d / f for f in filenames if f.lower().endswith(VIDEO_EXTS + GIF_EXTS)]
    return sorted(found, key=lambda p: _natural(str(p)))


@dataclass
class Clip:
    """An opened input: `n` frames of `size` (height, width) at `fps`."""

    path: Path
    kind: str  # "video" | "gif" | "images"
    n: int
    fps: float
    size: tuple[int, int]
    files: tuple[Path, ...] = ()  # image folders only

    def read(self, indices: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """Frames `indices` as uint8 (T, H, W, 3) RGB, resized to `size` (height, width) if given."""
        if self.kind == "video":
            return decode_video(self.path, indices, size)
        if self.kind == "gif":
            frames = _read_gif(self.path, indices)
        else:
            frames = np.stack([_read_image(self.files[i], self.size) for i in indices])
        if size is not None and tuple(size) != frames.shape[1:3]:
            import cv2

            frames = np.stack(
                [cv2.resize(f, size[::-1], interpolation=cv2.INTER_AREA) for f in frames]
            )
        return frames


def _read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"))
    except Exception as e:
        raise VideoDecodeError(f"{path}: unreadable image ({type(e).__name__}: {e})") from e
    if a.shape[:2] != tuple(size):
        raise VideoDecodeError(f"{path}: image size {a.shape[:2]} differs from the first {size}")
    return a


def _read_gif(path: Path, indices: np.ndarray) -> np.ndarray:
    """GIF frames composited as displayed (Pillow applies disposal and partial updates on seek)."""
    from PIL import Image

    want, out = set(int(i) for i in indices), {}
    try:
        with Image.open(path) as im:
            for i in range(max(want) + 1):
                im.seek(i)
                if i in want:
                    out[i] = np.asarray(im.convert("RGB"))
    except Exception as e:
        raise VideoDecodeError(f"{path}: cannot decode GIF ({type(e).__name__}: {e})") from e
    return np.stack([out[int(i)] for i in indices])


def open_clip(path: str | Path, image_fps: float = 30.0) -> Clip:
    """Probe an input; raises VideoDecodeError (empty, unreadable, no frames)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            (f for f in path.iterdir() if f.suffix.lower() in IMAGE_EXTS),
            key=lambda f: _natural(f.name),
        )
        if not files:
            raise VideoDecodeError(f"{path}: folder holds no images")
        from PIL import Image

        try:
            with Image.open(files[0]) as im:
                w, h = im.size
        except Exception as e:
            raise VideoDecodeError(f"{files[0]}: unreadable image ({e})") from e
        return Clip(path, "images", len(files), float(image_fps), (h, w), tuple(files))
    if not path.exists() or path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty or missing file")
    if path.suffix.lower() in GIF_EXTS:
        from PIL import Image

        try:
            with Image.open(path) as im:
                n, (w, h) = getattr(im, "n_frames", 1), im.size
                ms = []
                for i in range(n):
                    im.seek(i)
                    ms.append(im.info.get("duration") or 100)
        except Exception as e:
            raise VideoDecodeError(f"{path}: cannot read GIF ({type(e).__name__}: {e})") from e
        # GIF delays are per frame; frames are taken as evenly spaced at the mean delay.
        return Clip(path, "gif", n, 1000.0 / float(np.mean(ms)), (h, w))
    import decord

    try:
        vr = decord.VideoReader(str(path), num_threads=1)
        n, fps = len(vr), float(vr.get_avg_fps())
        h, w = vr[0].shape[:2]
    except Exception as e:
        cause = decoder_message(path)
        cause = f"{cause} ({type(e).__name__})" if cause else f"{type(e).__name__}: {e}"
        raise VideoDecodeError(f"{path}: cannot open: {cause}") from e
    if n == 0:
        raise VideoDecodeError(f"{path}: no frames")
    return Clip(path, "video", n, fps if fps > 0 else 30.0, (h, w))
