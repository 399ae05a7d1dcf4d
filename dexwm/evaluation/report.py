"""Evaluation outputs: the results dict (-> results.json), a Markdown table, plots, rollout pictures.

Tables show every method beside the model with its ratio to the model (errors: > 1 is worse than
the model; cosine and PCK: < 1 is worse).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dexwm.evaluation.baselines import DESCRIPTIONS
from dexwm.io import atomic_write_bytes, git_commit

FEATURE_SPACE = (
    "feat_* and cosine: the model's NORMALISED feature space (raw encoder features standardised "
    "per channel with the model's training statistics, the space it is trained and rolled out in); "
    "*_raw: raw encoder features. feat_mae is DexWM's reported feature error (its code calls it L2)."
)
RATIO_METRICS = ("feat_mae", "feat_mse", "cosine", "feat_mae_raw", "feat_mse_raw", "cosine_raw")


def _method_order(cfg, present: set[str]) -> list[str]:
    order = ["model", *cfg.baselines, *cfg.compare, "probe_on_truth"]
    return [m for m in order if m in present]


def _ratio(a, b):
    return [None if x is None or y is None or y == 0 else x / y for x, y in zip(a, b)]


def _groups(acc_result: dict, members: dict[str, list[str]]) -> list[str]:
    """Result groups in order datasets, embodiments, all; a group with exactly the clips of an
    earlier one is dropped (e.g. the embodiment of a single-embodiment dataset)."""
    order = sorted(g for g in acc_result if g.startswith("dataset:"))
    order += sorted(g for g in acc_result if g.startswith("embodiment:")) + ["all"]
    kept, seen = [], []
    for g in order:
        m = sorted(members.get(g, []))
        if g in acc_result and m not in seen:
            kept.append(g)
            seen.append(m)
    return kept


def assemble(cfg, wm, ev, sources, notes, probe_info, decoder_info, thresholds, C, seconds) -> dict:
    acc = ev.acc.result()
    groups: dict = {}
    checks: dict = {}
    for g in _groups(acc, ev.members):
        methods = {m: acc[g][m] for m in _method_order(cfg, set(acc[g]))}
        model = methods["model"]
        ratios = {}
        for m, r in methods.items():
            if m == "model":
                continue
            ratios[m] = {k: _ratio(r[k], model[k]) for k in RATIO_METRICS if k in r and k in model}
            if "pck" in r and "pck" in model:
                ratios[m]["pck"] = {t: _ratio(v, model["pck"][t]) for t, v in r["pck"].items()}
        groups[g] = {"clips": ev.acc.clips[g], "methods": methods, "ratios": ratios}
        chk = {}
        for base in ("shuffled_actions", "copy_last", "zero_actions"):
            if base in methods and "feat_mae" in methods[base]:
                worse = [i + 1 for i, (a, b) in enumerate(zip(model["feat_mae"], methods[base]["feat_mae"])) if a >= b]  # fmt: skip
                chk[f"model_beats_{base}_every_step"] = not worse
                chk[f"steps_model_not_better_than_{base}"] = worse
                d, se = methods[base].get("feat_mae_diff"), methods[base].get("feat_mae_diff_se")
                if d and se:  # paired over clips: (baseline - model) / its standard error
                    z = [a / b if b > 0 else None for a, b in zip(d, se)]
                    chk[f"min_paired_z_vs_{base}"] = min(
                        (x for x in z if x is not None), default=None
                    )
        checks[g] = chk
        if (
            g.startswith("dataset:")
            and ev.probe is not None
            and not any(model.get("pck_visible", []))
        ):
            name = g.split(":", 1)[1]
            embs = ", ".join(sorted(sources[name].embodiments))
            notes.append(
                f"PCK skipped for {name}: no hand keypoint visible in the truth ({embs}; only "
                "embodiments with real hand keypoints count, see schema.HEATMAP_EMBODIMENTS)"
            )
    info = wm.checkpoint_info
    return {
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "checkpoint": {
            "path": str(cfg.checkpoint),
            "encoder": info.get("encoder"),
            "loss": info.get("loss"),
            "world_model": info.get("world_model"),
            "git_commit": info.get("git_commit"),
        },  # fmt: skip
        "eval_git_commit": git_commit(),
        "protocol": {
            "context": C,
            "horizon": cfg.horizon,
            "step_s": cfg.step_s,
            "feature_space": FEATURE_SPACE,
            "encoder_input": list(wm.encoder_spec.input_size),
            "pck_px_at_224x392": list(cfg.pck_px),
            "pck_px": thresholds,
            "pck_points": "wrist + 5 fingertips per hand in encoder-input pixels; denominator: "
            "points visible in the truth (hand valid, real hand embodiment, inside the crop)",
        },
        "methods": {
            m: DESCRIPTIONS.get(m, f"checkpoint {cfg.compare.get(m)}")
            for m in _method_order(cfg, {m for g in groups.values() for m in g["methods"]})
        },  # fmt: skip
        "sources": {k: v.to_dict() for k, v in sources.items()},
        "groups": groups,
        "checks": checks,
        "probe": probe_info,
        "decoder": decoder_info,
        "notes": notes,
        "seconds": round(seconds, 1),
    }


# ----- Markdown ---------------------------------------------------------------------------------
def _cell(v, r=None, fmt="{:.3f}") -> str:
    if v is None:
        return "-"
    s = fmt.format(v)
    return s if r is None else f"{s} ({r:.2f}x)"


def _per_step_table(methods: dict, ratios: dict, get) -> list[str]:
    H = len(methods["model"]["feat_mae"])
    lines = ["| method | " + " | ".join(str(i + 1) for i in range(H)) + " |"]
    lines.append("|---" * (H + 1) + "|")
    for m, r in methods.items():
        vals = get(r)
        if vals is None:
            continue
        rat = get(ratios.get(m, {})) if m != "model" else None
        cells = [_cell(v, None if rat is None else rat[i]) for i, v in enumerate(vals)]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def _fmt(v):
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def _mean(xs):
    xs = [x for x in (xs or []) if x is not None]
    return sum(xs) / len(xs) if xs else None


def markdown(res: dict) -> str:
    p = res["protocol"]
    px = ", ".join(f"{a:g}" for a in p["pck_px_at_224x392"])
    px_here = ", ".join(f"{a:.2f}" for a in p["pck_px"])
    lines = [
        f"# Open-loop prediction: `{res['checkpoint']['path']}`",
        "",
        f"Context {p['context']} frames, then {p['horizon']} autoregressive steps of "
        f"{p['step_s']} s with the true actions; baselines on the same clips. "
        f"{p['feature_space']} PCK at {px} px of a 224x392 frame = {px_here} px of the "
        f"{p['encoder_input'][0]}x{p['encoder_input'][1]} encoder input; {p['pck_points']}. "
        "Cells: value (ratio to the model).",
        "",
    ]
    for name, s in res["sources"].items():
        gaps = "; ".join(
            f"{fps} fps: gap {g['gap_frames']} ({g['step_s']:.3f} s)"
            for fps, g in s["gaps"].items()
        )
        lines.append(f"- source `{name}`: {s['clips']} clips from {s['samples']} samples ({gaps}); "
                     f"{len(s['too_short'])} samples too short")  # fmt: skip
    lines += [f"- note: {n}" for n in res["notes"]]
    if res["probe"]:
        pr = res["probe"]
        lines.append(f"- keypoint probe: {pr.get('train_frames')} training frames; validation "
                     f"(true features, held-in samples) median error {pr.get('val_median_px_error', float('nan')):.2f} px")  # fmt: skip
    for g, gr in res["groups"].items():
        methods, ratios = gr["methods"], gr["ratios"]
        H = len(methods["model"]["feat_mae"])
        lines += ["", f"## {g} ({gr['clips']} clips)", ""]
        steps = sorted({1, min(5, H), min(10, H), H})
        thr = list(methods["model"].get("pck", {}))
        head = [f"MAE@{s}" for s in steps] + ["MAE mean", "MSE mean", "cos mean", "raw MAE mean"]
        head += [f"PCK@{float(t):.2f}px mean" for t in thr]
        lines += ["| method | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
        for m, r in methods.items():
            rat = ratios.get(m, {})
            row = []
            for s in steps:
                v = r.get("feat_mae")
                row.append(
                    _cell(v and v[s - 1], rat.get("feat_mae", [None] * H)[s - 1] if rat else None)
                )
            for k in ("feat_mae", "feat_mse", "cosine", "feat_mae_raw"):
                mv, v = _mean(methods["model"].get(k)), _mean(r.get(k))
                row.append(_cell(v, None if m == "model" or v is None or not mv else v / mv))
            for t in thr:
                mv, v = _mean(methods["model"]["pck"][t]), _mean(r.get("pck", {}).get(t))
                row.append(_cell(v, None if m == "model" or v is None or not mv else v / mv))
            lines.append(f"| {m} | " + " | ".join(row) + " |")
        lines += ["", "(means over the horizon steps; raw = raw encoder feature space)", ""]
        lines += ["Feature MAE (normalised) per step:", ""]
        lines += _per_step_table(methods, ratios, lambda r: r.get("feat_mae"))
        lines += ["", "Cosine similarity per step:", ""]
        lines += _per_step_table(methods, ratios, lambda r: r.get("cosine"))
        for t in thr:
            lines += ["", f"PCK@{float(t):.2f} px per step:", ""]
            lines += _per_step_table(methods, ratios, lambda r, t=t: (r.get("pck") or {}).get(t))
        if res["checks"].get(g):
            lines += ["", "Checks (min_paired_z: smallest over steps of the baseline's MAE minus the "
                      "model's, paired over clips, in standard errors):", ""]  # fmt: skip
            lines += [f"- {k} = {_fmt(v)}" for k, v in res["checks"][g].items()]
    return "\n".join(lines) + "\n"


# ----- plots ------------------------------------------------------------------------------------
def _style(m: str) -> dict:
    return {"model": dict(lw=2.5, color="k"), "probe_on_truth": dict(ls="--", color="gray")}.get(
        m, {}
    )


def _label_row(row, group: str) -> None:
    row[0].set_ylabel(group)
    row[0].legend(fontsize=8)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_errors(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gs = list(res["groups"])
    keys = [("feat_mae", "feature MAE (normalised)"), ("feat_mse", "feature MSE (normalised)"), ("cosine", "cosine similarity")]  # fmt: skip
    fig, axes = plt.subplots(len(gs), 3, figsize=(14, 3.6 * len(gs)), squeeze=False)
    for row, g in zip(axes, gs):
        for ax, (k, title) in zip(row, keys):
            for m, r in res["groups"][g]["methods"].items():
                if k not in r:
                    continue
                x = np.arange(1, len(r[k]) + 1)
                y, se = np.array(r[k]), np.array(r[f"{k}_se"])
                ax.plot(x, y, label=m, **_style(m))
                ax.fill_between(x, y - se, y + se, alpha=0.15)
            ax.set(title=title, xlabel=f"step ({res['protocol']['step_s']} s)")
            ax.grid(alpha=0.3)
        _label_row(row, g)
    _save(fig, path)


def plot_pck(res: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gs = [
        g for g, gr in res["groups"].items() if any(gr["methods"]["model"].get("pck_visible", []))
    ]
    if not gs:
        return False
    thr = list(res["groups"][gs[0]]["methods"]["model"]["pck"])
    ref = res["protocol"]["pck_px_at_224x392"]
    fig, axes = plt.subplots(
        len(gs), len(thr), figsize=(4 * len(thr), 3.4 * len(gs)), squeeze=False
    )
    for row, g in zip(axes, gs):
        for ax, t, t_ref in zip(row, thr, ref):
            for m, r in res["groups"][g]["methods"].items():
                if "pck" in r:
                    y = [np.nan if v is None else v for v in r["pck"][t]]
                    ax.plot(np.arange(1, len(y) + 1), y, label=m, **_style(m))
            ax.set(title=f"PCK@{float(t):.2f} px ({t_ref:g} px at 224x392)", ylim=(0, 1.02))
            ax.set_xlabel(f"step ({res['protocol']['step_s']} s)")
            ax.grid(alpha=0.3)
        _label_row(row, g)
    _save(fig, path)
    return True


def write_all(res: dict, out: Path, vis: list[dict], decoder, cfg) -> None:
    files = {"json": str(out / "results.json"), "markdown": str(out / "results.md")}
    plot_errors(res, out / "error_vs_horizon.png")
    files["error_plot"] = str(out / "error_vs_horizon.png")
    if plot_pck(res, out / "pck_vs_horizon.png"):
        files["pck_plot"] = str(out / "pck_vs_horizon.png")
    if vis:
        input_size = tuple(res["protocol"]["encoder_input"])
        from dexwm.evaluation.pictures import rollout_pictures

        files["pictures"] = rollout_pictures(vis, decoder, input_size, out, cfg.step_s, cfg.videos)
    res["files"] = files
    atomic_write_bytes(out / "results.json", (json.dumps(res, indent=1) + "\n").encode())
    atomic_write_bytes(out / "results.md", markdown(res).encode())
