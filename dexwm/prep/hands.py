"""MediaPipe hand landmarks per frame: image landmarks (px), metric world landmarks, handedness,
score, for both hands, stored in (left, right) slots of the PHYSICAL hand.

Two back-ends, both offline on MediaPipe 0.10.21 (DESIGN.md s.6):
- default (`model=None`): `mp.solutions.hands` with the hand models bundled in the wheel
  (`modules/palm_detection/*.tflite`, `modules/hand_landmark/*.tflite`; `complexity` 0 = lite,
  1 = full). Its handedness label assumes a mirrored (selfie) image: on ordinary footage its
  "Left" is the person's right hand.
- a user-supplied Tasks-API bundle (`model="path/hand_landmarker.task"`, a zip of
  `hand_detector.tflite` + `hand_landmarks_detector.tflite`, e.g. Google's published file or one made
  by `build_task_bundle` from the bundled models). Its labels (0.10.21) name the physical hand on
  unmirrored footage (measured: tests/test_hands.py checks both back-ends on images whose hand side
  is annotated).
Set `mirrored=True` for footage that is itself mirrored (selfie previews); slots then follow the
hand as it appears, i.e. what MediaPipe's labels mean on such footage.

When two detections claim the same hand, the higher-scoring one is kept and the other dropped
(counted in `HandTrack.duplicates`): a hand is never put in a slot its label contradicts.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dexwm.keypoints import LEFT, NUM_KEYPOINTS, RIGHT

_BUNDLED = {0: "lite", 1: "full"}


def bundled_model_files(complexity: int = 1) -> tuple[Path, Path]:
    """(palm detector, hand landmark) .tflite files shipped inside the mediapipe wheel."""
    import mediapipe

    root = Path(mediapipe.__file__).parent / "modules"
    kind = _BUNDLED[complexity]
    files = (
        root / "palm_detection" / f"palm_detection_{kind}.tflite",
        root / "hand_landmark" / f"hand_landmark_{kind}.tflite",
    )
    for f in files:
        if not f.exists():
            raise FileNotFoundError(
                f"{f} missing: this mediapipe release ships no hand models (0.10.21 does); "
                "pass a hand_landmarker.task file instead"
            )
    return files


def build_task_bundle(out: str | Path, complexity: int = 1) -> Path:
    """Write a Tasks-API `hand_landmarker.task` from the models bundled in the mediapipe wheel."""
    palm, landmark = bundled_model_files(complexity)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w") as z:
        z.write(palm, "hand_detector.tflite")
        z.write(landmark, "hand_landmarks_detector.tflite")
    return out


@dataclass
class HandTrack:
    """Detections for T frames of one clip, slots (left, right) of the physical hand.

    uv: (T, 2, 21, 2) float32 px of the frames given to the detector; world: (T, 2, 21, 3) float32
    metres, MediaPipe's hand-centred metric landmarks (axes roughly the camera's); valid (T, 2);
    score (T, 2) handedness confidence. Invalid entries are zeros."""

    uv: np.ndarray
    world: np.ndarray
    valid: np.ndarray
    score: np.ndarray
    duplicates: int = 0
    size: tuple[int, int] = (0, 0)  # (height, width) of the frames the detector saw

    @classmethod
    def empty(cls, T: int, size: tuple[int, int] = (0, 0)) -> HandTrack:
        return cls(
            uv=np.zeros((T, 2, NUM_KEYPOINTS, 2), np.float32),
            world=np.zeros((T, 2, NUM_KEYPOINTS, 3), np.float32),
            valid=np.zeros((T, 2), bool),
            score=np.zeros((T, 2), np.float32),
            size=size,
        )

    @classmethod
    def concat(cls, tracks: list[HandTrack]) -> HandTrack:
        return cls(
            *(
                np.concatenate([getattr(t, k) for t in tracks])
                for k in ("uv", "world", "valid", "score")
            ),
            duplicates=sum(t.duplicates for t in tracks),
            size=tracks[0].size if tracks else (0, 0),
        )


@dataclass
class HandDetector:
    """MediaPipe hand landmarker over the frames of one clip at a time (tracking mode).

    model: None for the bundled `mp.solutions.hands` models, or a path to a `.task` bundle.
    Call `reset()` between clips; `detect(frames, fps)` may be called repeatedly on consecutive
    chunks of the same clip."""

    model: str | None = None
    complexity: int = 1
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    mirrored: bool = False
    static_image_mode: bool = False
    _graph: object = field(default=None, init=False, repr=False)
    _t_ms: int = field(default=0, init=False, repr=False)

    @property
    def backend(self) -> str:
        return "solutions" if self.model is None else "tasks"

    def _labels_assume_mirrored(self) -> bool:
        return self.backend == "solutions"

    def describe(self) -> dict:
        """What produced the keypoints, for meta.json."""
        files = bundled_model_files(self.complexity) if self.model is None else (Path(self.model),)
        import mediapipe

        return {
            "mediapipe": mediapipe.__version__,
            "backend": self.backend,
            "model": "bundled" if self.model is None else str(self.model),
            "model_sha256": [hashlib.sha256(Path(f).read_bytes()).hexdigest()[:16] for f in files],
            "complexity": self.complexity,
            "min_detection_confidence": self.min_detection_confidence,
            "min_tracking_confidence": self.min_tracking_confidence,
            "mirrored_input": self.mirrored,
            "handedness": "physical hand (label corrected for the back-end's mirroring assumption)",
        }

    def _build(self):
        import mediapipe as mp

        if self.model is None:
            return mp.solutions.hands.Hands(
                static_image_mode=self.static_image_mode,
                max_num_hands=2,
                model_complexity=self.complexity,
                min_detection_confidence=self.min_detection_confidence,
                min_tracking_confidence=self.min_tracking_confidence,
            )
        from mediapipe.tasks.python import BaseOptions, vision

        if not Path(self.model).is_file():
            raise FileNotFoundError(f"hand model file {self.model} not found")
        mode = vision.RunningMode.IMAGE if self.static_image_mode else vision.RunningMode.VIDEO
        return vision.HandLandmarker.create_from_options(
            vision.HandLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(self.model)),
                running_mode=mode,
                num_hands=2,
                min_hand_detection_confidence=self.min_detection_confidence,
                min_hand_presence_confidence=self.min_detection_confidence,
                min_tracking_confidence=self.min_tracking_confidence,
            )
        )

    def reset(self) -> None:
        """Forget tracking state before a new clip."""
        if self._graph is not None and self.backend == "solutions":
            self._graph.reset()
        elif self._graph is not None:  # the Tasks graph has no reset: rebuild it
            self._graph.close()
            self._graph = None
        self._t_ms = 0

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    def _raw(self, frame: np.ndarray, step_ms: int) -> list[tuple[str, float, list, list]]:
        """One RGB frame -> [(label, score, image landmarks, world landmarks)] per hand."""
        if self._graph is None:
            self._graph = self._build()
        if self.backend == "solutions":
            r = self._graph.process(frame)
            hands = zip(
                r.multi_handedness or [],
                r.multi_hand_landmarks or [],
                r.multi_hand_world_landmarks or [],
            )
            return [
                (c.classification[0].label, c.classification[0].score, i.landmark, w.landmark)
                for c, i, w in hands
            ]
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
        if self.static_image_mode:
            r = self._graph.detect(image)
        else:
            r = self._graph.detect_for_video(image, self._t_ms)
            self._t_ms += step_ms
        return [
            (c[0].category_name, c[0].score, i, w)
            for c, i, w in zip(r.handedness, r.hand_landmarks, r.hand_world_landmarks)
        ]

    def detect(self, frames: np.ndarray, fps: float = 30.0) -> HandTrack:
        """RGB uint8 frames (T, H, W, 3) -> HandTrack. Consecutive calls continue the same clip."""
        T, H, W = frames.shape[:3]
        track = HandTrack.empty(T, (H, W))
        step_ms = max(1, round(1000.0 / fps))
        swap = self._labels_assume_mirrored() != self.mirrored
        for t, frame in enumerate(frames):
            for label, score, img, world in self._raw(frame, step_ms):
                slot = LEFT if label == "Left" else RIGHT
                if swap:
                    slot = 1 - slot
                if track.valid[t, slot]:
                    track.duplicates += 1
                    if score <= track.score[t, slot]:
                        continue
                track.uv[t, slot] = [(p.x * W, p.y * H) for p in img]
                track.world[t, slot] = [(p.x, p.y, p.z) for p in world]
                track.valid[t, slot] = True
                track.score[t, slot] = score
        return track


_CACHE: dict[tuple, HandDetector] = {}


def cached_detector(**kwargs) -> HandDetector:
    """One detector (MediaPipe graph) per worker process and setting, reset for each new clip."""
    key = tuple(sorted(kwargs.items()))
    if key not in _CACHE:
        _CACHE[key] = HandDetector(**kwargs)
    det = _CACHE[key]
    det.reset()
    return det
