"""How the sources line up in what the model reads (the transfer study's "why"): per embodiment,
the camera, the hand slot its keypoints fill, where the hand is and how it moves in the 21-point
layout, and what pooled normalisation statistics do to the Allegro actions and features.

Everything is read from the study's own shards (hands.npy, hands_valid.npy, meta.json) and
computed with the statistics code training uses (`dexwm.data.stats.compute_stats`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from dexwm.data.actions import HAND_DIMS, keypoint_actions_static
from dexwm.data.clips import ClipConfig
from dexwm.data.loader import expand_paths, source_from
from dexwm.data.stages import shard_samples
from dexwm.data.stats import compute_stats
from dexwm.keypoints import FINGERTIPS

TIPS = list(FINGERTIPS)  # thumb, index, middle, ring, little
RIGHT = slice(HAND_DIMS // 2, HAND_DIMS)  # the right hand's action dims (dexwm.data.actions)


def source_summary(paths: list[str], max_samples: int = 64) -> dict:
    """Geometry of one source's hands in the camera frame (cm, mm per 10 Hz step)."""
    hands, valid, metas = [], [], []
    for s in shard_samples(expand_paths(paths)):
        hands.append(s["hands.npy"].astype(np.float64))
        valid.append(s["hands_valid.npy"].astype(bool))
        metas.append(s["meta.json"])
        if len(hands) >= max_samples:
            break
    if not hands:
        raise ValueError(f"{paths}: no samples")
    slot = np.concatenate([v.reshape(-1, 2) for v in valid]).mean(0)  # (2,) left, right
    side = int(np.argmax(slot))
    pts = np.concatenate([h[v[:, side], side] for h, v in zip(hands, valid)])  # (N, 21, 3)
    acts = np.concatenate([keypoint_actions_static(h, v) for h, v in zip(hands, valid)])
    d = acts[:, side * 63 : (side + 1) * 63].reshape(-1, 21, 3)
    d = d[np.abs(d).sum((1, 2)) > 0]  # steps where the hand is known in both frames
    ext = metas[0].get("camera_extrinsics") or {}
    return {
        "embodiment": metas[0].get("embodiment"),
        "samples": len(hands),
        "camera_position": ext.get("position"),
        "fx": (metas[0].get("intrinsics") or [[None]])[0][0],
        "hand_slot": {"left": float(slot[0]), "right": float(slot[1])},
        "wrist_cm": {
            "mean": (100 * pts[:, 0].mean(0)).tolist(),
            "std": (100 * pts[:, 0].std(0)).tolist(),
        },  # fmt: skip
        "span_cm": (100 * np.linalg.norm(pts[:, TIPS] - pts[:, :1], axis=-1).mean(0)).tolist(),
        "wrist_step_mm": float(1000 * np.linalg.norm(d[:, 0], axis=-1).mean()),
        "tips_vs_wrist_step_mm": float(
            1000 * np.linalg.norm(d[:, TIPS] - d[:, :1], axis=-1).mean()
        ),
    }


def clip_config(*config_files: str) -> ClipConfig:
    """The `data.clip` of the model and training configs (later files win)."""
    clip: dict = {}
    for f in config_files:
        clip |= ((yaml.safe_load(Path(f).read_text()) or {}).get("data") or {}).get("clip") or {}
    return ClipConfig(**clip)


def normalisation_shift(fitted_on: list[dict], target: dict, clip: ClipConfig, max_clips: int = 400) -> dict:  # fmt: skip
    """How statistics fitted on the sources `fitted_on` (as training fits them) differ from those
    of the `target` source alone: per dimension, the fitted std over the target's own std (> 1:
    the target's signals are shrunk by that normaliser) and the shift of the mean in units of the
    target's std; medians over the target's moving hand dims and over feature channels."""

    fitted = compute_stats([source_from(s) for s in fitted_on], clip, max_clips, progress=False)
    own = compute_stats([source_from(target)], clip, max_clips, progress=False)
    out = {"fitted_on": [s["name"] for s in fitted_on], "target": target["name"]}
    for key in ("action", "feat"):
        if f"{key}_std" not in own or f"{key}_std" not in fitted:
            continue
        m0, s0 = np.array(own[f"{key}_mean"]), np.array(own[f"{key}_std"])
        m1, s1 = np.array(fitted[f"{key}_mean"]), np.array(fitted[f"{key}_std"])
        dims = np.arange(len(s0))[RIGHT] if key == "action" else np.arange(len(s0))
        dims = dims[s0[dims] > 1e-9]
        out[key] = {
            "std_ratio": float(np.median(s1[dims] / s0[dims])),
            "mean_shift": float(np.median(np.abs(m1[dims] - m0[dims]) / s0[dims])),
        }
    return out


def alignment(sources_by_embodiment: dict[str, list[str]], stats_sources: dict[str, list[dict]],
              target: dict, clip: ClipConfig) -> dict:  # fmt: skip
    """{"sources": {embodiment: source_summary}, "normalisation": [normalisation_shift + arms]}:
    `stats_sources` maps each arm to the sources its normalisation statistics were fitted on;
    arms sharing a set share a row; sets of the target alone are left out (ratio 1 by design)."""
    summaries = {e: source_summary(p) for e, p in sources_by_embodiment.items()}
    rows: dict[tuple, dict] = {}
    for arm, sources in stats_sources.items():
        names = tuple(s["name"] for s in sources)
        if names == (target["name"],):
            continue
        if names not in rows:
            rows[names] = {**normalisation_shift(sources, target, clip), "arms": []}
        rows[names]["arms"].append(arm)
    return {"sources": summaries, "normalisation": list(rows.values())}


def alignment_lines(a: dict) -> list[str]:
    """The report's section."""
    lines = [
        "## How the sources line up", "",
        "What the model reads of each embodiment (`studies/transfer_alignment.py`, from the study's "
        "shards): the camera, the hand slot its keypoints fill, the wrist position in the camera "
        "frame, wrist-to-fingertip span, and motion per 10 Hz step.", "",
        "| source | samples | camera position (m) | fx (px) | hand slot (left / right valid) | wrist x, y, z (cm, mean +- std) | span thumb..little (cm) | wrist step (mm) | fingertips vs wrist step (mm) |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for e, s in a["sources"].items():
        w = ", ".join(f"{m:.0f}+-{d:.0f}" for m, d in zip(s["wrist_cm"]["mean"], s["wrist_cm"]["std"]))  # fmt: skip
        cam = "-" if s["camera_position"] is None else ", ".join(f"{v:.2f}" for v in s["camera_position"])  # fmt: skip
        lines.append(
            f"| {e} | {s['samples']} | {cam} | {s['fx'] or 0:.1f} | {s['hand_slot']['left']:.2f} / "
            f"{s['hand_slot']['right']:.2f} | {w} | {' / '.join(f'{v:.1f}' for v in s['span_cm'])} | "
            f"{s['wrist_step_mm']:.1f} | {s['tips_vs_wrist_step_mm']:.1f} |"
        )  # fmt: skip
    if a["normalisation"]:
        lines += ["", "The normalisation statistics each arm's model uses (fitted on its sources, "
                  "its `stats_from`, or those of the arm it starts from) against the Allegro "
                  "data's own: fitted std / own std (> 1: the Allegro signal is shrunk) and "
                  "|fitted mean - own mean| / own std, medians over the right hand's action dims "
                  "and over feature channels (arms fitted on Allegro alone: 1 and 0 by design).", "",
                  "| arms | fitted on | actions: std ratio | actions: mean shift | features: std ratio | features: mean shift |",  # noqa: E501
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for n in a["normalisation"]:
            act, feat = n.get("action", {}), n.get("feat", {})
            cells = [f"{d.get(k, float('nan')):.2f}" for d in (act, feat) for k in ("std_ratio", "mean_shift")]  # fmt: skip
            lines.append(f"| {', '.join(n['arms'])} | {', '.join(n['fitted_on'])} | " + " | ".join(cells) + " |")  # fmt: skip
    return lines + [""]
