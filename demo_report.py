"""The demo's report: one Markdown page with every number the run measured, plots and GIF links."""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

from dexwm.io import atomic_write_bytes


def training_curves(metrics_csvs: list[str], png: Path) -> dict:
    """Plot train/val feature loss (and the copy-last reference) from Lightning's metrics.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    for path in metrics_csvs:
        for row in csv.DictReader(open(path)):
            for k in ("train/feat", "train/hand", "val/feat", "val/feat_copy_last"):
                if row.get(k):
                    series.setdefault(k, []).append((int(row["step"]), float(row[k])))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, pts in sorted(series.items()):
        if k == "train/hand":
            continue
        pts.sort()
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            label=k,
            marker="o" if k.startswith("val") else None,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("feature MSE (normalised features)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    last = {k: sorted(v)[-1] for k, v in series.items()}
    return {k: {"step": s, "value": round(v, 5)} for k, (s, v) in last.items()}


def gap_lines(summary: dict) -> list[str]:
    """The planner (the first policy) against BC and random: success (DexWM thresholds) per
    task, in percentage points."""
    planner, *others = summary
    others = [o for o in ("bc", "random") if o in others]
    tasks = [t for t in summary[planner] if t != "all"] + ["all"]
    rows = [f"| task | {planner} | " + " | ".join(f"{o} | {planner} - {o}" for o in others) + " |"]
    rows.append("|---" * (2 + 2 * len(others)) + "|")
    for t in tasks:
        mine = summary[planner][t]["success_dexwm"]
        cells = [f"{100 * mine:.0f}%"]
        for o in others:
            theirs = summary[o][t]["success_dexwm"]
            cells += [f"{100 * theirs:.0f}%", f"{100 * (mine - theirs):+.0f} pt"]
        rows.append(f"| {t} | " + " | ".join(cells) + " |")
    return ["Gap of the planner to the baselines (success, DexWM thresholds):", "", *rows]


def _demote(md: str, levels: int = 2) -> str:
    """Embed another Markdown page: its headings go `levels` deeper."""
    return "\n".join(
        "#" * levels + line if line.startswith("#") else line for line in md.splitlines()
    )


def _rel(path: str | Path, root: Path) -> str:
    return os.path.relpath(path, root)


def write_report(out: Path, stages: dict, cfg, wall: float) -> Path:
    """Write <out>/report.md from the stage records (and the files the stages wrote)."""
    lines = ["# dexwm demo report", ""]
    lines += [
        f"Run folder `{out}`, written {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()} with "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}. Every number below was "
        "measured by this run (`python demo.py`, settings at the end of this page).",
        "",
        "## Time per stage",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    total = 0.0
    for name, rec in stages.items():
        lines.append(f"| {name} | {rec['seconds']:.0f} |")
        total += rec["seconds"]
    lines += [f"| **total (stages)** | **{total:.0f}** ({total / 60:.1f} min) |", ""]
    if wall < total - 1:
        lines += [
            f"(This invocation took {wall:.0f} s; earlier runs produced the reused stages.)",
            "",
        ]

    sim = stages.get("sim data", {}).get("result", {})
    feats = stages.get("features", {}).get("result", {})
    if sim:
        lines += [
            "## Data",
            "",
            "| split / embodiment | episodes | skipped | samples with features |",
            "|---|---|---|---|",
        ]
        for k, v in sim.items():
            f = feats.get(k, {})
            lines.append(
                f"| {k} | {v['items_ok']} | {v['items_skipped']} | {f.get('samples', '-')} |"
            )
        lines += [
            "",
            f"Episodes of {cfg.frames} frames at 10 Hz, {cfg.size}x{cfg.size} px, one fixed camera.",
            "",
        ]

    train = stages.get("train", {}).get("result")
    if train:
        png = out / "report_files" / "training.png"
        last = training_curves(train["metrics"], png)
        lines += ["## Training (tiny preset)", "", f"![training curves]({_rel(png, out)})", ""]
        lines += ["| metric | last value | at step |", "|---|---|---|"]
        lines += [f"| {k} | {v['value']} | {v['step']} |" for k, v in sorted(last.items())]
        lines += [
            "",
            f"Checkpoint: `{_rel(train['checkpoint'], out)}` ({train['steps']} steps).",
            "",
        ]

    ev = stages.get("evaluate", {}).get("result")
    if ev:
        folder = Path(ev["folder"])
        lines += ["## Offline evaluation (held-out episodes, open-loop rollouts)", ""]
        md = folder / "results.md"
        if md.exists():
            lines += [_demote(md.read_text().replace("](", f"]({_rel(folder, out)}/")), ""]
        for name in ("error_vs_horizon.png", "pck_vs_horizon.png"):
            if (folder / name).exists():
                lines += [f"![{name}]({_rel(folder / name, out)})", ""]
        strips = sorted((folder / "strips").glob("*.png"))[:2]
        lines += [f"![rollout]({_rel(s, out)})" for s in strips] + [""]

    plan = stages.get("plan", {}).get("result")
    if plan:
        folder = Path(plan["folder"])
        lines += ["## Planning on the Allegro rig (MPC through the world model)", "",
                  "The default planner without its reach pose term (the demo trains no goal-pose "
                  "head): reach is planned on the feature cost alone.", ""]  # fmt: skip
        md = folder / "summary.md"
        if md.exists():
            lines += [_demote(md.read_text()), ""]
        if (folder / "summary.json").exists():
            lines += gap_lines(json.loads((folder / "summary.json").read_text())) + [""]
        # the first episode of every task, for each policy that made videos
        first: dict[tuple[str, str], Path] = {}
        for g in sorted(folder.rglob("*.gif")):
            first.setdefault((g.parent.name, g.stem.rsplit("_", 1)[0]), g)
        if first:
            lines += (
                ["Episodes (camera | goal):", ""]
                + [f"![{p} {t}]({_rel(g, out)})" for (p, t), g in first.items()]
                + [""]
            )
    lines += ["## Settings", "", "```json", json.dumps(asdict(cfg), indent=1), "```", ""]
    path = out / "report.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
