"""Shared file I/O: atomic writes, checksums, the git commit, the run record saved beside every
output (the resolved config plus the commit and command that produced it), and `InputError`, the
one exception that commands report as a single line (exit code 2) instead of a traceback, and
`exit_with_parent`, the watchdog every worker pool starts its processes with.

A leaf module: it imports nothing from dexwm, so every layer may use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class InputError(FileNotFoundError, ValueError):
    """A path the user named does not exist, holds nothing the command can read, or cannot take
    the output. The message is one line: the path, then what is wrong or what was expected there.
    Commands run through `dexwm.config.command` print it without a traceback and exit 2. (Both a
    FileNotFoundError and a ValueError, as the errors it replaces were.)"""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_commit() -> str | None:
    """The commit of the checkout this code runs from (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_run_record(folder: str | Path, config_yaml: str, name: str = "config.yaml") -> Path:
    """`folder`/config.yaml: the resolved config, headed by the git commit and the command line.
    The one way every entry point (train, eval, plan, demo, data_prep) records how an output
    was made."""
    head = f"# git commit: {git_commit()}\n# command: {' '.join(sys.argv)}\n"
    path = Path(folder) / name
    atomic_write_text(path, head + config_yaml)
    return path


def exit_with_parent(interval: float = 1.0) -> None:
    """End this worker process when its parent is gone. A pool initializer: an evaluation or a
    data-preparation job killed with SIGKILL would otherwise leave its workers running their
    current item (an episode, a shard) to the end, holding the cores."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
