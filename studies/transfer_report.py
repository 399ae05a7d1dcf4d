"""The transfer study's report: paired z between arms, goal checks, report.md, study.json, a plot.

Errors are feature MAE in RAW encoder features (the space all arms share; see studies.paired), per
open-loop rollout step on the same held-out Allegro clips.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

from dexwm.io import atomic_write_bytes, atomic_write_json
from studies.paired import paired_z

BASELINE = "copy_last"


def comparisons(cfg, arms: dict) -> dict:
    """{"B vs A": paired_z(...), ...} for every [better, reference] of cfg.compare whose arms ran."""
    errs = {n: json.loads(Path(a["eval"]["clip_errors"]).read_text()) for n, a in arms.items()}
    clips = {n: e["clips"] for n, e in errs.items()}
    first = next(iter(clips.values()))
    if any(c != first for c in clips.values()):
        raise ValueError("arms were evaluated on different held-out clips: no paired comparison")
    out = {}
    for better, ref in cfg.compare:
        if better not in errs or (ref != BASELINE and ref not in errs):
            continue
        worse = errs[better][BASELINE] if ref == BASELINE else errs[ref]["model"]
        out[f"{better} vs {ref}"] = paired_z(errs[better]["model"], worse)
    return out


def plan_success(arm: dict) -> float | None:
    """The first planner's success rate (DexWM thresholds) over all its episodes."""
    s = arm["plan"]["summary"].get(arm["plan"]["policy"], {})
    rows = [s["all"]] if "all" in s else list(s.values())
    n = sum(r["episodes"] for r in rows)
    return sum(r["success_dexwm"] * r["episodes"] for r in rows) / n if n else None


def goals(cfg, arms: dict, z: dict) -> list[dict]:
    out = []
    for better, ref in cfg.goal_beats:
        name = f"{better} vs {ref}"
        zs = z.get(name, {}).get("z")
        ok = None if zs is None else all(v is not None and v >= cfg.goal_z for v in zs)
        low = None if not zs else min((v for v in zs if v is not None), default=None)
        out.append({"goal": f"{better} beats {ref} at every step (paired z >= {cfg.goal_z:g})",
                    "met": ok, "value": f"min z {_f(low, '{:.2f}')}"})  # fmt: skip
    if len(cfg.goal_plan) == 2 and all(a in arms for a in cfg.goal_plan):
        a, ref = cfg.goal_plan
        sa, sr = plan_success(arms[a]), plan_success(arms[ref])
        ok = None if sa is None or not sr else sa >= cfg.goal_plan_ratio * sr
        out.append({"goal": f"{a}'s planning success >= {cfg.goal_plan_ratio:g} x {ref}'s",
                    "met": ok, "value": f"{_pct(sa)} vs {_pct(sr)}"
                    + (" (undecided: the reference succeeded in no episode)" if sr == 0 else "")})  # fmt: skip
    return out


def _f(v, fmt="{:.4f}") -> str:
    return "-" if v is None else fmt.format(v)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f} %"


def _mean(xs) -> float | None:
    xs = [x for x in xs or [] if x is not None]
    return sum(xs) / len(xs) if xs else None


def plot(out: Path, cfg, arms: dict, z: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4))
    for k, (name, arm) in enumerate(arms.items()):
        err, c = arm["eval"]["error"], f"C{k}"
        x = range(1, len(err["model"]["mean"]) + 1)
        ax.plot(x, err["model"]["mean"], "o-", color=c, label=f"{name}: model", ms=3)
        if "shuffled_actions" in err:
            ax.plot(x, err["shuffled_actions"]["mean"], ":", color=c, label=f"{name}: shuffled")
    first = next(iter(arms.values()))["eval"]["error"]
    if BASELINE in first:
        ax.plot(x, first[BASELINE]["mean"], "k--", lw=2, label="copy-last")
    ax.set(xlabel="rollout step (0.2 s)", ylabel="feature MAE (raw encoder features)",
           title="held-out Allegro clips")  # fmt: skip
    for name, r in z.items():
        bx.plot(range(1, len(r["z"]) + 1), [v if v is not None else float("nan") for v in r["z"]],
                "o-", ms=3, label=name)  # fmt: skip
    bx.axhline(cfg.goal_z, color="grey", ls="--", lw=1, label=f"goal z = {cfg.goal_z:g}")
    bx.axhline(0, color="k", lw=0.5)
    bx.set(xlabel="rollout step (0.2 s)", ylabel="paired z (reference - arm) / se",
           title="paired comparisons")  # fmt: skip
    for a in (ax, bx):
        a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    png = out / "report_files" / "error_vs_step.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def _arm_section(name: str, arm: dict) -> list[str]:
    err, H = arm["eval"]["error"], len(arm["eval"]["error"]["model"]["mean"])
    src = ", ".join(f"{s['name']} ({len(s['paths'])} folder(s), weight {s['weight']:g})" for s in arm["sources"])  # fmt: skip
    eps = ", ".join(f"{k} {v}" for k, v in arm["arm"]["episodes"].items() if v)
    lines = [f"### Arm {name}: {arm['arm']['description']}", "",
             f"Training episodes: {eps or 'none'}{' + human video' if any(s['name'] == 'human' for s in arm['sources']) else ''}; sources: {src}.", "",
             "Feature MAE (raw) per rollout step:", "",
             "| method | " + " | ".join(str(i + 1) for i in range(H)) + " | mean |", "|---" * (H + 2) + "|"]  # fmt: skip
    for m, r in err.items():
        lines.append(f"| {m} | " + " | ".join(_f(v) for v in r["mean"]) + f" | {_f(_mean(r['mean']))} |")  # fmt: skip
    pck = arm["eval"]["pck"]
    if pck:
        thr = list(pck.get("model", {}))
        lines += ["", "PCK (mean over steps) at " + ", ".join(f"{float(t):.2f}" for t in thr)
                  + " px of the encoder input:", "", "| method | " + " | ".join(thr) + " |",
                  "|---" * (len(thr) + 1) + "|"]  # fmt: skip
        lines += [f"| {m} | " + " | ".join(_f(p.get(t), "{:.3f}") for t in thr) + " |" for m, p in pck.items()]  # fmt: skip
    lines += ["", "Planning success (DexWM thresholds; strict in brackets):", "",
              "| policy | task | episodes | success | plan s / step |", "|---|---|---|---|---|"]  # fmt: skip
    for pol, tasks in arm["plan"]["summary"].items():
        for t, s in tasks.items():
            lines.append(f"| {pol} | {t} | {s['episodes']} | {_pct(s['success_dexwm'])} ({_pct(s['success_strict'])}) | {s['plan_s_per_step']:.2f} |")  # fmt: skip
    sec = arm["seconds"]
    lines += ["", f"Seconds: train {sec['train']:.0f}, evaluate {sec['evaluate']:.0f}, plan {sec['plan']:.0f}.", ""]  # fmt: skip
    return lines


def write_report(
    out: Path, cfg, arms: dict, stages: dict, wall: float, alignment: dict | None = None
) -> Path:
    """report.md and study.json in `out` from the arms' stage records (and the sources'
    alignment, studies.transfer_alignment); -> report.md."""
    z = comparisons(cfg, arms)
    checks = goals(cfg, arms, z)
    png = plot(out, cfg, arms, z)
    data_s = sum(r["seconds"] for n, r in stages.items() if n.startswith(("sim ", "features ")))
    arm_s = {n: sum(a["seconds"].values()) for n, a in arms.items()}
    total = data_s + sum(arm_s.values())
    first = next(iter(arms.values()))["eval"]
    lines = [
        "# Transfer study: does other data help the Allegro model?", "",
        f"Run folder `{out}`, written {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()} with "
        f"{os.cpu_count()} CPU cores. Every number below was measured by this run; settings at the end. "
        f"Held-out: {first['clips']} Allegro clips, the same for every arm. Errors: feature MAE in raw "
        "encoder features (the space all arms share), open-loop rollouts with the true actions.", "",
        "## Goals", "", "| goal | met | measured |", "|---|---|---|",
    ]  # fmt: skip
    met = {True: "yes", False: "**no**", None: "undecided"}
    lines += [f"| {g['goal']} | {met[g['met']]} | {g['value']} |" for g in checks]
    lines += ["", "## Arms", "", "| arm | model MAE (mean over steps) | copy-last | shuffled | "
              "PCK (model, mean over steps and thresholds) | planning success | seconds |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for n, a in arms.items():
        e = a["eval"]["error"]
        pck = _mean(list(a["eval"]["pck"].get("model", {}).values()))
        lines.append(f"| {n} | {_f(_mean(e['model']['mean']))} | {_f(_mean(e.get(BASELINE, {}).get('mean')))} | "
                     f"{_f(_mean(e.get('shuffled_actions', {}).get('mean')))} | {_f(pck, '{:.3f}')} | "
                     f"{_pct(plan_success(a))} | {arm_s[n]:.0f} |")  # fmt: skip
    lines += ["", f"![error and paired z per step]({png.relative_to(out)})", "", "## Paired z per step", "",
              "z = mean over clips of (reference's error - arm's error) / its standard error; > 0: the arm "
              "predicts better. Cells: z (mean difference).", ""]  # fmt: skip
    if z:
        H = len(next(iter(z.values()))["z"])
        lines += ["| comparison | " + " | ".join(str(i + 1) for i in range(H)) + " |", "|---" * (H + 1) + "|"]  # fmt: skip
        for name, r in z.items():
            cells = [f"{_f(v, '{:.2f}')} ({d:+.4f})" for v, d in zip(r["z"], r["diff"])]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if alignment:
        from studies.transfer_alignment import alignment_lines

        lines += [""] + alignment_lines(alignment)
    lines += ["", "## Time", "", "| part | seconds |", "|---|---|", f"| data (sim + features, shared) | {data_s:.0f} |"]  # fmt: skip
    lines += [f"| arm {n} (train + evaluate + plan) | {s:.0f} |" for n, s in arm_s.items()]
    lines += [f"| **total** | **{total:.0f}** ({total / 60:.1f} min) |", ""]
    if wall < total - 1:
        lines += [f"(This invocation took {wall:.0f} s; earlier runs produced the reused stages.)", ""]  # fmt: skip
    lines += ["## Arms in detail", ""]
    for n, a in arms.items():
        lines += _arm_section(n, a)
    lines += ["## Settings", "", "```json", json.dumps(asdict(cfg), indent=1), "```", ""]
    atomic_write_json(out / "study.json", {
        "goals": checks, "paired_z": z, "seconds": {"data": data_s, "arms": arm_s, "total": total},
        "arms": {n: {"error": a["eval"]["error"], "pck": a["eval"]["pck"],
                     "plan_success": plan_success(a), "plan": a["plan"]["summary"],
                     "seconds": a["seconds"], "sources": a["sources"]} for n, a in arms.items()},
        "alignment": alignment, "config": asdict(cfg),
    })  # fmt: skip
    path = out / "report.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
