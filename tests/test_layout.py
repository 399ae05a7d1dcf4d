"""The architecture rules that import-linter cannot see (docs/ARCHITECTURE.md): a small top level,
no shelling out from the library, no side effects at import, thin entry scripts."""

import ast
import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import dexwm

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "dexwm"


def test_top_level_holds_at_most_eight_modules():
    modules = sorted(p.name for p in LIB.glob("*.py"))
    assert len(modules) <= 8, modules


def test_library_never_runs_a_subprocess_except_git():
    """Nothing in dexwm/ runs train.py, data_prep or any other command: it calls functions."""
    calls = []
    for path in LIB.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = ast.unparse(node.func)
                if f.startswith(("subprocess.", "os.system", "os.exec", "os.spawn", "Popen")):
                    calls.append((str(path.relative_to(ROOT)), ast.unparse(node)[:80]))
    assert [c for c, _ in calls] == ["dexwm/io.py"], calls  # `git rev-parse HEAD` only
    assert "git" in calls[0][1]


def test_importing_the_library_has_no_side_effects():
    """Every dexwm module imports without touching the environment, logging or global seeds (in a
    fresh interpreter; the third-party libraries are imported first: Lightning, for one, sets an
    environment variable at import, which is theirs, not ours)."""
    names = [m.name for m in pkgutil.walk_packages(dexwm.__path__, "dexwm.")]
    third = "torch, lightning, timm, transformers, webdataset, mujoco, jsonargparse, mediapipe"
    code = (
        f"import {third}\n"
        "import os, sys, logging, random, importlib\n"
        "env, handlers, state = dict(os.environ), list(logging.root.handlers), random.getstate()\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "changed = sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k))\n"
        "assert not changed, changed\n"
        "assert list(logging.root.handlers) == handlers\n"
        "assert random.getstate() == state\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(names) > 40


def test_entry_scripts_are_thin():
    for name in ("train.py", "eval.py", "plan.py", "demo.py", "study.py"):
        assert len((ROOT / name).read_text().splitlines()) <= 150, name
    for path in (ROOT / "data_prep").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 150, path.name


def test_every_module_imports():
    for m in pkgutil.walk_packages(dexwm.__path__, "dexwm."):
        importlib.import_module(m.name)
