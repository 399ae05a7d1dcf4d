"""The transfer study end to end at tiny sizes (`study.py --quick`): real sim episodes, features,
training, evaluation and planning for the four arms; the report and study.json hold every arm's
numbers and the paired z tables; a second run reuses every stage."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~1.5 min on 2 cores
def test_study_quick_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, str(ROOT / "study.py"), "--quick", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    stages = json.loads((out / "stages.json").read_text())
    arms = ("A", "B", "C", "D")
    for a in arms:
        assert {f"train {a}", f"evaluate {a}", f"plan {a}"} <= set(stages)
        # the per-clip errors are run_eval's clips: their means are its per-step numbers
        assert stages[f"evaluate {a}"]["result"]["clip_errors_vs_run_eval"] < 1e-4
    study = json.loads((out / "study.json").read_text())
    assert set(study["arms"]) == set(arms)
    H = 4  # eval_horizon of configs/study/quick.yaml
    for a in study["arms"].values():
        assert len(a["error"]["model"]["mean"]) == H
        assert {"copy_last", "shuffled_actions"} <= set(a["error"])
        assert a["pck"]["model"] and 0.0 <= a["plan_success"] <= 1.0
        assert set(a["seconds"]) == {"train", "evaluate", "plan"}
    assert set(study["paired_z"]) == {"B vs A", "C vs copy_last", "D vs A"}
    assert all(len(z["z"]) == H and z["clips"] >= 2 for z in study["paired_z"].values())
    assert [g["met"] in (True, False, None) for g in study["goals"]] == [True] * 3
    # A's Allegro episodes are a subset of D's, and B's are A's
    src = {n: {s["name"]: s["paths"] for s in a["sources"]} for n, a in study["arms"].items()}
    assert set(src["A"]["allegro"]) < set(src["D"]["allegro"])
    assert src["B"]["allegro"] == src["A"]["allegro"] and "allegro" not in src["C"]
    # how the sources line up: one camera, the right-hand slot, the gripper's 21 points span 4 cm
    align = study["alignment"]
    src = align["sources"]
    assert set(src) == {"allegro", "shadow", "panda_gripper"}
    assert all(s["camera_position"] == src["allegro"]["camera_position"] for s in src.values())
    assert all(s["hand_slot"]["right"] == 1.0 for s in src.values())
    assert max(src["panda_gripper"]["span_cm"]) < 6 < min(src["allegro"]["span_cm"])
    rows = {tuple(r["arms"]): r for r in align["normalisation"]}
    assert set(rows) == {("B",), ("C",)}
    assert rows[("C",)]["fitted_on"] == ["shadow", "panda_gripper"]
    assert all(r["action"]["std_ratio"] > 0 for r in rows.values())
    report = (out / "report.md").read_text()
    for text in ("## Goals", "## Paired z per step", "B vs A", "C vs copy_last", "## Time",
                 "## How the sources line up",
                 "Arm D", "shuffled_actions", "Planning success"):  # fmt: skip
        assert text in report
    assert (out / "report_files" / "error_vs_step.png").stat().st_size > 0
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("reused") == len(stages)  # nothing recomputed
    assert json.loads((out / "stages.json").read_text()) == stages


def test_arm_settings_are_checked(tmp_path):
    """Arms that start from another arm's model or fit their statistics on some sources: wrong
    names fail before anything runs."""
    from studies.transfer import StudyConfig, load_arms

    def arms(*texts):
        paths = []
        for i, text in enumerate(texts):
            paths.append(str(tmp_path / f"arm{i}.yaml"))
            Path(paths[-1]).write_text(text)
        cfg = StudyConfig(arms=paths, heldout=1, frames=4, train_steps=1, eval_horizon=1,
                          eval_clips=1, plan_episodes=1)  # fmt: skip
        return load_arms(cfg)

    C = "name: C\nepisodes: {shadow: 2}\n"
    F = "name: F\nepisodes: {allegro: 2}\ninit: C\n"
    assert [a.init for a in arms(C, F)] == [None, "C"]
    with pytest.raises(ValueError, match="listed before"):
        arms(F, C)
    with pytest.raises(ValueError, match="stats_from"):
        arms("name: B\nepisodes: {allegro: 2, shadow: 2}\nstats_from: [panda_gripper]\n")
    with pytest.raises(ValueError, match="drop stats_from"):
        arms(C, F + "stats_from: [allegro]\n")
    b = arms("name: B\nepisodes: {allegro: 2, shadow: 2}\nstats_from: [allegro]\n")[0]
    assert b.stats_from == ["allegro"]
    assert arms("name: A\nepisodes: {allegro: 2}\nseed: 1\n")[0].seed == 1


def test_human_video_joins_the_arms_that_ask_for_it(tmp_path):
    """--human: arms with `human: true` (B, C) train on the human shards' features as one more
    source with their weight; A and D do not; the feature stage caches each human folder."""
    from studies.transfer import Study, StudyConfig

    cfg = StudyConfig(arms=[str(ROOT / f"configs/study/arms/{a}.yaml") for a in "ABCD"],
                      heldout=1, frames=4, train_steps=1, eval_horizon=1, eval_clips=1,
                      plan_episodes=1, out=str(tmp_path / "study"),
                      human=[str(tmp_path / "h0"), str(tmp_path / "h1")])  # fmt: skip
    study = Study(cfg)
    src = {a.name: {s["name"]: s for s in study.train_sources(a)} for a in study.arms}
    assert "human" not in src["A"] and "human" not in src["D"]
    for arm in ("B", "C"):
        human = src[arm]["human"]
        assert human["paths"] == [str(study.feats / "human/0"), str(study.feats / "human/1")]
        assert human["weight"] == 1.0
    assert src["B"]["allegro"]["weight"] == 2.0
