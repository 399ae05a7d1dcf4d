"""The wire format: msgpack maps, numpy arrays inline (the msgpack-numpy convention of the policy
servers robot stacks already use, e.g. openpi-client).

An array travels as a map {b"__ndarray__": True, b"data": raw bytes (C order), b"dtype": the
numpy dtype string (e.g. "|u1", "<f4"), b"shape": [d0, d1, ...]}. Only bool, integer and float
arrays are allowed (no object, void or complex data); numpy scalars travel as plain numbers.
Decoding checks every array map (dtype, shape, byte count) and raises `ProtocolError` naming what
is wrong, so a peer never builds an array from a malformed message.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

ALLOWED_KINDS = "biuf"  # bool, signed / unsigned integers, floats
MAX_DIMS = 8


class ProtocolError(ValueError):
    """A message that is not a well-formed msgpack map of this protocol."""


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise TypeError(f"arrays of dtype {obj.dtype} cannot be sent (bool, int, float only)")
        return {
            b"__ndarray__": True,
            b"data": np.ascontiguousarray(obj).tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": list(obj.shape),
        }
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def packb(obj: Any) -> bytes:
    """A message (dicts with str keys, lists, numbers, str, bytes, numpy arrays) -> bytes."""
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def _array(obj: dict) -> np.ndarray:
    data, dtype, shape = obj.get(b"data"), obj.get(b"dtype"), obj.get(b"shape")
    if not isinstance(data, bytes) or not isinstance(dtype, str | bytes):
        raise ProtocolError("an array needs b'data' (bytes) and b'dtype' (str)")
    try:
        dt = np.dtype(dtype.decode() if isinstance(dtype, bytes) else dtype)
    except (TypeError, ValueError) as e:
        raise ProtocolError(f"unknown array dtype {dtype!r}") from e
    if dt.kind not in ALLOWED_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise ProtocolError(f"array dtype {dt} is not allowed (bool, int, float only)")
    if (
        not isinstance(shape, list | tuple)
        or len(shape) > MAX_DIMS
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise ProtocolError(f"array shape must be a list of at most {MAX_DIMS} ints >= 0")
    count = 1
    for s in shape:
        count *= s
    if count * dt.itemsize != len(data):
        raise ProtocolError(
            f"array of shape {list(shape)} and dtype {dt} needs {count * dt.itemsize} bytes, "
            f"got {len(data)}"
        )
    return np.frombuffer(data, dtype=dt).reshape(shape).copy()  # writable, owns its memory


def _hook(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        return _array(obj)
    return obj


def unpackb(data: bytes) -> Any:
    """bytes -> the message, arrays decoded; raises ProtocolError on anything malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError("messages are binary frames (msgpack), not text")
    try:
        return msgpack.unpackb(data, object_hook=_hook, raw=False)
    except ProtocolError:
        raise
    except Exception as e:  # msgpack raises several types (ExtraData, FormatError, StackError...)
        raise ProtocolError(f"not a msgpack message: {type(e).__name__}: {e}") from e
