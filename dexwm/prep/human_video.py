"""Human video -> samples (schema v1) with MediaPipe hand keypoints in the camera frame.

Per input: decode at `fps` (nearest frames) with the long side capped at `detect_max_side`, run
MediaPipe on every frame (tracking mode, both hands), fit each hand's metric world landmarks to
its image landmarks with PnP under intrinsics K (given as `intrinsics` [fx, fy, cx, cy] in pixels
of the source resolution, else assumed from `hfov_deg`), optionally smooth, resize + centre-crop
the frames to `size`, and cut into segments of `segment_frames`. Frames without a hand are
invalid (zeros, hands_valid False). The command is `python -m data_prep.human_video`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dexwm.data.schema import make_meta, sample_key
from dexwm.data.shards import ShardJob, Skip, record_notes
from dexwm.data.video import VideoDecodeError, encode_mp4
from dexwm.io import InputError
from dexwm.prep.hand_fit import (
    CROPS,
    fit_track,
    frame_geometry,
    intrinsics_from_fov,
    off_frame_counts,
    resample_indices,
    resize_crop,
    smooth_track,
    transform_intrinsics,
    transform_uv,
)
from dexwm.prep.hands import HandTrack, cached_detector
from dexwm.prep.video_inputs import IMAGE_EXTS, VIDEO_EXTS, list_inputs, open_clip


@dataclass(frozen=True, kw_only=True)
class HumanVideoConfig:
    """How each input is turned into samples.

    Args:
        fps: output frame rate (nearest source frames); None keeps every frame.
        size: stored frame size (height, width), even; aspect-preserving resize + centre crop.
        segment_frames: frames per sample (0: whole input as one sample).
        min_segment_frames: shorter trailing segments are dropped (noted in the manifest).
        detect_max_side: long side of the frames MediaPipe sees (None: source resolution).
        hfov_deg: horizontal field of view assumed when `intrinsics` is not given.
        intrinsics: fx, fy, cx, cy in pixels of the source resolution.
        model: a Tasks-API hand_landmarker.task; default: the models bundled in mediapipe 0.10.21.
        complexity: 0 lite / 1 full bundled model (ignored with `model`).
        min_detection_confidence: MediaPipe's palm detection threshold.
        min_tracking_confidence: MediaPipe's landmark tracking threshold.
        mirrored: the footage is mirrored (selfie preview); default: ordinary camera footage.
        smooth_window: Savitzky-Golay window (frames) within runs of valid detections; 0 = off.
        max_reproj: reject a hand whose PnP reprojection RMS exceeds this fraction of its
            image size (landmark sets that disagree).
        image_fps: frame rate of image folders.
        crop: how frames are fitted to `size`: "center" (resize to cover, centred crop: keypoints
            outside the crop stay valid 3D but are masked in 2D, counted in the manifest),
            "hands" (resize to cover, the crop window slid per segment to keep the most hand
            keypoints in frame; fixed within a segment, so its intrinsics hold) or "letterbox"
            (resize to fit, black bars: nothing cropped, fewer pixels on the hands).
        frames: "mp4" (H.264) or "npy" (raw uint8).
        source: recorded in every sample's meta.json; also starts each key.
        licence: recorded in every sample's meta.json.
    """

    fps: float | None = 10.0
    size: tuple[int, int] = (224, 392)
    segment_frames: int = 100
    min_segment_frames: int = 8
    detect_max_side: int | None = 960
    hfov_deg: float = 60.0
    intrinsics: tuple[float, float, float, float] | None = None
    model: str | None = None
    complexity: int = 1
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    mirrored: bool = False
    smooth_window: int = 0
    max_reproj: float = 0.1
    image_fps: float = 30.0
    crop: str = "center"
    frames: str = "mp4"
    source: str = "human_video"
    licence: str = "unknown"

    def __post_init__(self) -> None:
        if self.size[0] % 2 or self.size[1] % 2:
            raise ValueError(f"--size must be even (H.264), got {self.size}")
        if self.frames not in ("mp4", "npy"):
            raise ValueError(f"--frames must be mp4 or npy, got {self.frames!r}")
        if self.crop not in CROPS:
            raise ValueError(f"--crop must be one of {', '.join(CROPS)}, got {self.crop!r}")


@dataclass(frozen=True, kw_only=True)
class HumanVideoJob(ShardJob, HumanVideoConfig):
    """Human video -> webdataset shards (schema v1) with MediaPipe hand keypoints.

    Args:
        inputs: folder (searched recursively) or a single video / GIF / image folder.
    """

    inputs: Path


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def detection_size(src_hw: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    s = 1.0 if not max_side else min(1.0, max_side / max(src_hw))
    return _even(src_hw[0] * s), _even(src_hw[1] * s)


@dataclass
class DetectedClip:
    """An input after decoding and MediaPipe: what `clip_to_samples` turns into samples.

    chunks: source frame indices per segment; videos: the stored frames per segment (mp4 bytes or
    uint8 arrays); track: detections over all segments at detection size, whose intrinsics are
    K_det; geom: detection size -> stored size (see dexwm.prep.hand_fit.cover_crop), one for all
    segments or one per segment."""

    path: str
    fps: float
    source_fps: float
    K_det: np.ndarray
    geom: tuple[float, float, int, int] | list[tuple[float, float, int, int]]
    chunks: list[np.ndarray]
    videos: list
    track: HandTrack
    detector: dict
    notes: list[str]

    def segment_geom(self, k: int) -> tuple[float, float, int, int]:
        return self.geom[k] if isinstance(self.geom, list) else self.geom


def _source_intrinsics(cfg: HumanVideoConfig, size: tuple[int, int]) -> np.ndarray:
    if not cfg.intrinsics:
        return intrinsics_from_fov(*size, cfg.hfov_deg)
    fx, fy, cx, cy = cfg.intrinsics
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def too_short(n: int, src_fps: float, kept: int, fps: float, cfg: HumanVideoConfig, images: bool):
    """The reason for skipping a clip that yields fewer frames than one segment's minimum."""
    need = max(2, cfg.min_segment_frames)
    why = (
        f"clip shorter than the minimum at {src_fps:g} fps: {n} frames = {n / src_fps:.2f} s give "
        f"{kept} frames at {fps:g} fps, fewer than the {need} of --min_segment_frames"
    )
    if images:
        why += (
            f"; a folder of images is read at --image_fps {src_fps:g}: if its frames were taken "
            "at a lower rate, pass that rate as --image_fps"
        )
    return why


def detect_clip(path: str, cfg: HumanVideoConfig) -> DetectedClip:
    """Decode an input at cfg.fps, run MediaPipe on every frame, store resized frames per segment.
    Raises Skip when the input cannot be decoded at all."""
    try:
        clip = open_clip(path, cfg.image_fps)
    except VideoDecodeError as e:
        raise Skip(str(e)) from e
    idx = resample_indices(clip.n, clip.fps, cfg.fps)  # source frame indices kept
    fps = min(cfg.fps or clip.fps, clip.fps)
    if len(idx) < max(2, cfg.min_segment_frames):
        raise Skip(too_short(clip.n, clip.fps, len(idx), fps, cfg, clip.kind == "images"))
    det_hw = detection_size(clip.size, cfg.detect_max_side)
    scale = (det_hw[0] / clip.size[0], det_hw[1] / clip.size[1], 0, 0)
    det = cached_detector(
        model=cfg.model,
        complexity=cfg.complexity,
        min_detection_confidence=cfg.min_detection_confidence,
        min_tracking_confidence=cfg.min_tracking_confidence,
        mirrored=cfg.mirrored,
    )
    seg_len = cfg.segment_frames if cfg.segment_frames > 0 else len(idx)
    chunks = [idx[a : a + seg_len] for a in range(0, len(idx), seg_len)]
    notes, tracks, videos, geoms = [], [], [], []
    # Decode, detect and encode chunk by chunk (memory stays bounded by one segment); the tracker
    # state runs on across chunks, so the whole clip is tracked as one sequence.
    for k, chunk in enumerate(chunks):
        try:
            frames = clip.read(chunk, det_hw)  # (t, h, w, 3) at detection size
        except VideoDecodeError as e:
            if k == 0:
                raise Skip(str(e)) from e
            notes.append(f"truncated: decoding stopped at source frame {int(chunk[0])} ({e})")
            chunks = chunks[:k]
            break
        tracks.append(det.detect(frames, fps))
        geoms.append(frame_geometry(cfg.crop, det_hw, cfg.size, tracks[-1].uv, tracks[-1].valid))
        stored = resize_crop(frames, cfg.size, geoms[-1])  # (t, H, W, 3)
        videos.append(encode_mp4(stored, fps) if cfg.frames == "mp4" else stored)
    return DetectedClip(
        path=str(path),
        fps=fps,
        source_fps=clip.fps,
        K_det=transform_intrinsics(_source_intrinsics(cfg, clip.size), scale),
        geom=geoms,
        chunks=chunks,
        videos=videos,
        track=HandTrack.concat(tracks),
        detector=det.describe(),
        notes=notes,
    )


def clip_to_samples(
    dc: DetectedClip, cfg: HumanVideoConfig, item_key: str, episode: str
) -> list[dict]:
    """Pure per-input transform: detections -> camera-frame keypoints -> one sample per segment.

    PnP places each hand in the camera frame; a reprojection RMS above cfg.max_reproj x the hand's
    image size means the two landmark sets disagree, and the hand is not trusted."""
    track = dc.track
    if not track.valid.any():
        raise Skip(f"no hands detected in {len(track.valid)} frames")
    hand_px = np.ptp(track.uv, axis=2).max(-1)  # (T, 2) larger side of the hand's box
    cam, valid, rms = fit_track(track.world, track.uv, track.valid, dc.K_det)  # (T, 2, 21, 3)
    valid &= rms <= cfg.max_reproj * np.maximum(hand_px, 1.0)
    cam = smooth_track(cam, valid, cfg.smooth_window)
    uv_det = smooth_track(track.uv, valid, cfg.smooth_window)  # (T, 2, 21, 2) detection pixels
    bounds = np.cumsum([0] + [len(c) for c in dc.chunks])
    uv = np.concatenate(
        [
            transform_uv(uv_det[a:b], dc.segment_geom(k))
            for k, (a, b) in enumerate(zip(bounds, bounds[1:]))
        ]
    )  # (T, 2, 21, 2) stored-frame pixels, each segment by its own crop
    cam, uv = np.where(valid[..., None, None], cam, 0.0), np.where(valid[..., None, None], uv, 0.0)

    keep, notes = [], list(dc.notes)
    for k in range(len(dc.chunks)):
        T, sl = bounds[k + 1] - bounds[k], slice(bounds[k], bounds[k + 1])
        if T < max(2, cfg.min_segment_frames):
            notes.append(f"segment {k}: dropped, only {T} frames")
        elif not valid[sl].any():
            notes.append(f"segment {k}: dropped, no hand in {T} frames")
        else:
            keep.append((k, T, sl))
    if not keep:
        raise Skip("; ".join(notes))
    samples = []
    for k, T, sl in keep:
        geom = dc.segment_geom(k)
        K = transform_intrinsics(dc.K_det, geom)
        meta = make_meta(
            source=cfg.source,
            embodiment="human",
            fps=dc.fps,
            size=cfg.size,
            intrinsics=K.round(4).tolist(),
            licence=cfg.licence,
            camera_valid=False,
            intrinsics_assumed=cfg.intrinsics is None,
            hfov_deg=None if cfg.intrinsics else cfg.hfov_deg,
            keypoint_frame="camera",
            uv_convention="pixels of the stored frame, pixel centres at i + 0.5",
            crop=cfg.crop,
            frame_geometry={
                "scale_yx": [round(geom[0], 6), round(geom[1], 6)],
                "top_left": [int(geom[2]), int(geom[3])],
                "note": "stored pixel = scale x detection pixel - top_left (negative: black bars)",
            },
            off_frame=off_frame_counts(uv[sl], valid[sl], cfg.size),
            original_video=dc.path,
            source_fps=dc.source_fps,
            segment=k,
            segment_start_frame=int(bounds[k]),
            source_frames=dc.chunks[k].tolist(),
            handedness_score=track.score[sl].round(3).tolist(),
            pnp_rms_px=rms[sl].round(2).tolist(),
            duplicate_detections=track.duplicates,
            smooth_window=cfg.smooth_window,
            detector=dc.detector,
            item_key=item_key,
            notes=notes,
        )
        samples.append(
            {
                "__key__": sample_key(cfg.source, episode, "cam0", k),
                "frames.mp4" if cfg.frames == "mp4" else "frames.npy": dc.videos[k],
                "hands.npy": cam[sl].astype(np.float32),
                "hands_uv.npy": uv[sl].astype(np.float32),
                "hands_valid.npy": valid[sl].copy(),
                "camera.npy": np.zeros((T, 6), np.float32),
                "meta.json": meta,
            }
        )
    return samples


def process_video(payload: tuple[str, str, str, HumanVideoConfig]) -> list[dict]:
    """One input (path, item key, episode name, config) -> samples, one per segment."""
    path, item_key, episode, cfg = payload
    return clip_to_samples(detect_clip(path, cfg), cfg, item_key, episode)


def run(job: HumanVideoJob) -> dict:
    """Convert the inputs to shards (resumable); returns the manifest."""
    root = Path(job.inputs)
    if not root.exists():
        raise InputError(f"{root}: does not exist")
    items = []
    for p in list_inputs(root):
        rel = p.relative_to(root).as_posix() if p != root else p.name
        episode = rel.replace("/", "__")
        items.append((rel, (str(p), rel, episode, job)))
    if not items:
        raise InputError(
            f"{root}: no inputs in this folder (expected video files {', '.join(VIDEO_EXTS)}, "
            f"GIFs, or folders of {'/'.join(IMAGE_EXTS)} frames)"
        )
    job.run(items, process_video, desc="videos")
    return record_notes(job.out)
