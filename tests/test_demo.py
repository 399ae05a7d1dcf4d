"""The main job end to end (`demo.py --quick`): every stage runs, the report holds the measured
numbers, and a second run reuses the finished stages."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a few minutes: its own CI step (.ci/run); tests/test_end_to_end_tiny.py is the fast one
def test_demo_quick_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, str(ROOT / "demo.py"), "--quick", "--out", str(out), "--workers", "1"]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    stages = json.loads((out / "stages.json").read_text())
    assert set(stages) == {"sim data", "features", "train", "evaluate", "bc", "plan"}
    report = (out / "report.md").read_text()
    for section in (
        "Time per stage",
        "Training",
        "Offline evaluation",
        "Planning",
        "shuffled_actions",
        "copy_last",
    ):
        assert section in report
    assert (out / "report_files" / "training.png").exists()
    res = json.loads((out / "eval" / "results.json").read_text())
    assert res["checks"]  # model vs baselines per step
    plan = json.loads((out / "plan" / "summary.json").read_text())
    assert set(plan) == {"cem", "bc", "random", "oracle"}
    assert "Gap of the planner to the baselines" in report and "cem - bc" in report
    assert list((out / "plan").rglob("*.gif"))
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # nothing recomputed: every stage reported as reused, its record untouched
    assert r.stdout.count("reused") == 6
    assert json.loads((out / "stages.json").read_text()) == stages


def test_a_fresh_stage_starts_from_nothing(tmp_path):
    """`--fresh '[plan]'` redoes a stage without the records an earlier run left in its folder
    (the planning stage resumes from episodes.jsonl, which a redo must not reuse)."""
    sys.path.insert(0, str(ROOT))
    from demo_stages import Stages

    folder = tmp_path / "plan"

    def stage():
        folder.mkdir(exist_ok=True)
        log = folder / "episodes.jsonl"
        seen = log.read_text() if log.exists() else ""
        log.write_text(seen + "record\n")
        return {"records": (seen + "record\n").count("record")}

    stages = Stages(tmp_path)
    assert stages.run("plan", stage, outputs=(folder,)) == {"records": 1}
    assert stages.run("plan", stage, outputs=(folder,)) == {"records": 1}  # reused, not rerun
    (folder / "episodes.jsonl").write_text("record\nrecord\n")  # what an interrupted redo left
    assert stages.run("plan", stage, fresh=True, outputs=(folder,)) == {"records": 1}
