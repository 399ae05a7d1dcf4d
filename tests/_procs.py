"""Kill a command that runs a worker pool and check its workers go with it (Linux /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

HAS_PROC = Path("/proc/self/stat").exists()


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...), None if gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def busy(pid: int, cpu_s: float = 5.0) -> bool:
    """Has the process used more than `cpu_s` of CPU (imports done, working on an item)?"""
    fields = _stat(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    return fields is not None and (int(fields[11]) + int(fields[12])) / ticks > cpu_s


def pool_workers(pid: int) -> list[int]:
    """Live multiprocessing (spawn) workers whose parent is `pid`."""
    out = []
    for d in Path("/proc").iterdir():
        fields = _stat(int(d.name)) if d.name.isdigit() else None
        if fields is None or int(fields[1]) != pid or fields[0] == "Z":
            continue
        try:
            if "spawn_main" in (d / "cmdline").read_text(errors="ignore"):
                out.append(int(d.name))
        except OSError:
            continue
    return out


def kill_once_workers_are_busy(cmd: list[str], cwd: Path, workers: int = 2) -> list[int]:
    """Run `cmd`, wait until `workers` pool workers are busy, SIGKILL the command and return the
    workers' pids once they are gone. Fails if they do not start, or outlive it by 30 s."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    found: list[int] = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            found = pool_workers(proc.pid)
            if len(found) == workers and all(busy(w) for w in found):
                break
            time.sleep(1)
        assert proc.poll() is None and len(found) == workers, f"{workers} workers did not start"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(alive(w) for w in found):
            time.sleep(0.5)
        assert not any(alive(w) for w in found), "workers outlived the killed command"
        return found
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in found:
            if alive(w):
                os.kill(w, signal.SIGKILL)
