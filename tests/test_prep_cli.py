"""Preparation commands as a user meets them: exit codes, one-line errors without a traceback, and
the one-line summary every command ends with (dexwm.config.command). Bad inputs are made here: a
truncated and a zero-byte video, a text file named .mp4, an empty folder, a missing path, a DROID
root without the requested split."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_droid import write_episode
from test_human_video import moving_squares

from data_prep import cache_features, droid, human_video, sim_episodes, stats
from dexwm.data.manifest import read_manifest, skip_kind, summarize
from dexwm.data.video import encode_mp4

REPO = Path(__file__).resolve().parents[1]


def one_line_error(capsys, code: int) -> str:
    """The command failed with exit code 2 and said why in exactly one line, no traceback."""
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    return lines[0]


def summary_line(capsys) -> str:
    out, _ = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines, "no summary printed"
    return lines[-1]


def test_missing_path_as_a_user_runs_it(tmp_path):
    """The real command line (python -m): one line on stderr, exit 2, no traceback."""
    missing = tmp_path / "does_not_exist.mp4"
    cmd = [sys.executable, "-m", "data_prep.human_video", "--inputs", str(missing)]
    done = subprocess.run(
        [*cmd, "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {missing}: does not exist"
    assert "Traceback" not in done.stderr and "no videos under" not in done.stderr


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    code = human_video.cli(["--inputs", str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    line = one_line_error(capsys, code)
    assert line.startswith(f"error: {tmp_path / 'in'}: no inputs in this folder (expected video")
    assert ".mp4" in line and "GIFs" in line and ".jpg" in line


def test_every_input_unreadable_exits_1_with_the_decoder_cause(tmp_path, capsys):
    """Nothing written -> exit 1; the summary counts the skips by reason, and the manifest keeps
    FFmpeg's own cause ("moov atom not found"), not only "cannot open"."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = encode_mp4(moving_squares(30), fps=30)
    (inputs / "truncated.mp4").write_bytes(good[: len(good) // 2])  # moov atom is at the end
    (inputs / "zero.mp4").write_bytes(b"")
    (inputs / "text.mp4").write_text("this is not a video\n")
    code = human_video.cli(
        ["--inputs", str(inputs), "--out", str(tmp_path / "out"), "--progress", "false"]
    )
    line = summary_line(capsys)
    assert code == 1
    assert line == (
        f"wrote 0 samples (0 shards) from 0 of 3 inputs to {tmp_path / 'out'}; skipped 3: "
        "cannot open: moov atom not found x2, empty or missing file x1"
    )
    reasons = {s["key"]: s["reason"] for s in read_manifest(tmp_path / "out")["skipped"]}
    assert "cannot open: moov atom not found" in reasons["truncated.mp4"]
    assert "cannot open: moov atom not found" in reasons["text.mp4"]
    assert "empty or missing file" in reasons["zero.mp4"]


def test_droid_root_without_the_split(tmp_path, capsys):
    root = tmp_path / "droid"
    write_episode(root, "0", T=4, cams=0)
    (root / "annotation" / "val").mkdir()  # an empty split is not listed as existing
    out = str(tmp_path / "out")
    code = droid.cli(["--root", str(root), "--split", "test", "--out", out])
    assert one_line_error(capsys, code) == (
        f"error: {root / 'annotation' / 'test'}: no episodes (expected <id>.json files) for "
        "--split test; splits with episodes here: train"
    )
    code = droid.cli(["--root", str(tmp_path / "nowhere"), "--out", out])
    assert one_line_error(capsys, code) == f"error: {tmp_path / 'nowhere'}: does not exist"
    code = droid.cli(["--root", str(tmp_path), "--out", out])
    assert one_line_error(capsys, code).startswith(f"error: {tmp_path}: not a DROID-format folder")


def test_droid_split_has_help(capsys):
    with pytest.raises(SystemExit) as done:
        droid.cli(["--help"])
    assert done.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--split SPLIT which split to read: the folder name under annotation/ and videos/" in (
        help_text
    )


def test_droid_run_ends_with_a_summary(tmp_path, capsys):
    root = tmp_path / "droid"
    write_episode(root, "0", T=6)
    write_episode(root, "1", T=6)
    (root / "videos" / "train" / "1" / "0.mp4").write_bytes(b"")
    code = droid.cli(["--root", str(root), "--out", str(tmp_path / "out"), "--progress", "false"])
    assert code == 0
    assert summary_line(capsys) == (
        f"wrote 2 samples (1 shard) from 1 of 2 inputs to {tmp_path / 'out'}; skipped 1: "
        "video of camera N missing or empty x1"
    )


def test_other_commands_fail_in_one_line(tmp_path, capsys):
    missing = tmp_path / "nope"
    code = cache_features.cli(["--shards", str(missing), "--out", str(tmp_path / "feats")])
    assert one_line_error(capsys, code) == f"error: {missing}: shard path does not exist"
    code = stats.cli(["--shards", f"[{missing}]", "--out", str(tmp_path / "s" / "stats.json")])
    assert one_line_error(capsys, code) == f"error: {missing}: shard path does not exist"
    code = sim_episodes.cli(["--embodiment", "octopus", "--out", str(tmp_path / "sim")])
    assert one_line_error(capsys, code).startswith(
        "error: invalid settings: unknown embodiment 'octopus'"
    )


def test_skip_kinds_and_summary():
    assert skip_kind("/a/b c/x.mp4: cannot open: moov atom not found; Invalid data (E)") == (
        "cannot open: moov atom not found"
    )
    assert skip_kind("no hands detected in 20 frames") == "no hands detected in N frames"
    assert skip_kind("error: KeyError: 'observation.state.joint_position'") == (
        "error: KeyError: 'observation.state.joint_position'"
    )
    manifest = {
        "counts": {"items": 2, "items_ok": 2, "samples": 5, "shards": 2},
        "skipped": [],
    }
    assert summarize(manifest) == ("wrote 5 samples (2 shards) from 2 of 2 inputs; skipped 0", True)
    manifest["counts"].update(samples=0, items_ok=0)
    manifest["skipped"] = [{"key": "a", "reason": "x\ny"}, {"key": "b", "reason": ""}]
    line, wrote = summarize(manifest)
    assert not wrote and "\n" not in line and line.endswith("skipped 2: x x1, unknown x1")
