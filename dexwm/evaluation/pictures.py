"""Rollout pictures through the pixel decoder: per clip a PNG strip (rows: true frames, decoded
truth, decoded predictions of the model and baselines, with true (green) and probe-from-prediction
(red) keypoints; columns: the context, then future steps) and an mp4 (truth | decoded truth |
decoded model prediction). For looking at, never for metrics.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from dexwm.evaluation.data import crop_frames
from dexwm.io import atomic_write_bytes


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)[:80]


def _hcat(images: list[np.ndarray], sep: np.ndarray) -> np.ndarray:
    parts = [images[0]]
    for x in images[1:]:
        parts += [sep, x]
    return np.concatenate(parts, 1)


def rollout_pictures(
    vis: list[dict], decoder, input_size, out: Path, step_s: float, videos: bool
) -> list[str]:
    """Per clip: a PNG strip (rows: true frames, decoded truth, decoded predictions; columns: the
    context, then future steps) and an mp4 (truth | decoded truth | decoded model prediction)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dexwm.data.video import encode_mp4

    files = []
    for n, v in enumerate(vis):
        size = tuple(decoder.out_size) if decoder is not None else tuple(input_size)
        truth = crop_frames(torch.from_numpy(v["frames"]), tuple(input_size), size)
        truth = (truth * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (T, h, w, 3)
        C, T = v["context"], len(truth)
        rows = {"truth": truth}
        if decoder is not None:
            rows["decoded truth"] = decoder.images(v["raw"]).numpy()
            for m, pred in v["pred_raw"].items():
                rows[f"{m} (decoded)"] = np.concatenate(
                    [rows["decoded truth"][:C], decoder.images(pred).numpy()]
                )
        H = T - C
        future = sorted({C + int(round(i)) for i in np.linspace(0, H - 1, min(H, 8))})
        cols = list(range(C)) + future
        fig, axes = plt.subplots(
            len(rows),
            len(cols),
            squeeze=False,
            figsize=(1.6 * len(cols), (1.6 * size[0] / size[1] + 0.25) * len(rows) + 0.4),
        )
        sx, sy = size[1] / input_size[1], size[0] / input_size[0]
        for r, (label, imgs) in enumerate(rows.items()):
            for c, t in enumerate(cols):
                ax = axes[r, c]
                ax.imshow(imgs[t])
                ax.set_xticks([]), ax.set_yticks([])
                if r == 0:
                    ax.set_title(
                        "context" if t < C else f"+{(t - C + 1) * step_s:.1f} s", fontsize=8
                    )
                if c == 0:
                    ax.set_ylabel(label, fontsize=8)
                if t >= C and v["uv"] is not None:
                    vis_t = v["visible"][t - C]
                    if label == "truth":
                        uv = v["uv"][t - C][vis_t]
                        ax.scatter(uv[:, 0] * sx - 0.5, uv[:, 1] * sy - 0.5, s=6, c="lime")
                    elif label == "model (decoded)" and v["pred_uv"] is not None:
                        uv = v["pred_uv"][t - C][vis_t]
                        ax.scatter(
                            uv[:, 0] * sx - 0.5, uv[:, 1] * sy - 0.5, s=6, c="red", marker="x"
                        )
        fig.suptitle(f"{v['source']}: {v['key']} from frame {v['start']}", fontsize=9)
        fig.tight_layout()
        png = out / "strips" / f"{n:02d}_{_safe(v['key'])}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=80)
        plt.close(fig)
        files.append(str(png))
        if videos and decoder is not None:
            sep = np.full((size[0], 2, 3), 255, np.uint8)
            panels = [rows["truth"], rows["decoded truth"], rows["model (decoded)"]]
            frames = np.stack([_hcat([p[t] for p in panels], sep) for t in range(T)])
            if frames.shape[2] % 2:
                frames = frames[:, :, :-1]
            mp4 = out / "videos" / f"{n:02d}_{_safe(v['key'])}.mp4"
            atomic_write_bytes(mp4, encode_mp4(frames, fps=max(1.0, 1.0 / step_s)))
            files.append(str(mp4))
    return files
