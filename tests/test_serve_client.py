"""The planning client package (clients/python): its wire format, and that it installs and imports
on its own (numpy, websockets, msgpack; never torch, never dexwm)."""

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import msgpack
import numpy as np
import pytest
from _serve import CLIENT  # noqa: F401  (puts clients/python on the path)
from dexwm_client import ProtocolError, packb, unpackb

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clients" / "python"
DEPENDENCIES = {"numpy", "websockets", "msgpack"}


@pytest.mark.parametrize("dtype", ["uint8", "bool", "int32", "int64", "float32", "float64", ">f8"])
def test_arrays_round_trip_exactly(dtype):
    rng = np.random.default_rng(0)
    a = (rng.normal(size=(4, 5, 3)) * 50).astype(dtype)
    msg = {"type": "act", "image": a, "nested": {"list": [a[0], 1, "x"]}, "scalar": np.float32(2)}
    out = unpackb(packb(msg))
    for got in (out["image"], out["nested"]["list"][0]):
        assert got.dtype == a.dtype and got.flags.writeable
    np.testing.assert_array_equal(out["image"], a)
    np.testing.assert_array_equal(out["nested"]["list"][0], a[0])
    assert out["scalar"] == 2.0 and out["nested"]["list"][1:] == [1, "x"]
    empty = unpackb(packb({"a": np.zeros((0, 3))}))["a"]
    assert empty.shape == (0, 3)


def test_openpi_style_array_maps_decode():
    """An array map as other msgpack-numpy peers write it (bytes keys, shape as a tuple)."""
    a = np.arange(6, dtype="<f4").reshape(2, 3)
    raw = msgpack.packb(
        {
            "x": {
                b"__ndarray__": True,
                b"data": a.tobytes(),
                b"dtype": a.dtype.str,
                b"shape": a.shape,
            }
        },
        use_bin_type=True,
    )
    np.testing.assert_array_equal(unpackb(raw)["x"], a)


@pytest.mark.parametrize(
    "array, message",
    [
        ({b"dtype": "<f8", b"shape": [2], b"data": b"\0" * 8}, "needs 16 bytes, got 8"),
        ({b"dtype": "|O", b"shape": [1], b"data": b"\0" * 8}, "dtype object is not allowed"),
        ({b"dtype": "<c16", b"shape": [1], b"data": b"\0" * 16}, "is not allowed"),
        ({b"dtype": "nope", b"shape": [1], b"data": b"\0"}, "unknown array dtype"),
        ({b"dtype": "<f8", b"shape": [-1], b"data": b""}, "list of at most 8 ints >= 0"),
        ({b"dtype": "<f8", b"shape": [1] * 9, b"data": b"\0" * 8}, "at most 8 ints"),
        ({b"dtype": "<f8", b"shape": "3", b"data": b"\0" * 24}, "list of at most 8 ints"),
        ({b"dtype": "<f8", b"shape": [1]}, "needs b'data'"),
    ],
)
def test_malformed_arrays_are_refused_with_the_reason(array, message):
    raw = msgpack.packb({"a": {b"__ndarray__": True, **array}}, use_bin_type=True)
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(").replace("[", r"\[")):
        unpackb(raw)


def test_malformed_messages_raise_protocol_errors():
    for raw in (b"\xc1", b"\x92\x01", msgpack.packb([1])[:-1] + b"\xc1", "text"):
        with pytest.raises(ProtocolError):
            unpackb(raw)
    with pytest.raises(TypeError, match="cannot be sent"):
        packb({"a": np.array([object()])})


def test_client_imports_only_numpy_websockets_msgpack_and_the_stdlib():
    imported = set()
    for path in (PACKAGE / "dexwm_client").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"dexwm_client"}
    assert third_party == DEPENDENCIES, third_party
    meta = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    assert {d.split(">")[0].split("=")[0] for d in meta["dependencies"]} == DEPENDENCIES


def test_client_installs_and_imports_on_its_own(tmp_path):
    """pip installs the package alone; importing it loads neither torch nor dexwm."""
    source, target = tmp_path / "source", tmp_path / "site"  # pip builds in the source folder
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    code = (
        "import sys, dexwm_client\n"
        f"assert dexwm_client.__file__.startswith({str(target)!r}), dexwm_client.__file__\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'dexwm')]\n"
        "assert not bad, bad\n"
        "print(dexwm_client.__version__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "0.1.0"
