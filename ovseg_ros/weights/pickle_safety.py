"""What a pickle or torch file may run when it is read, and reading it without running
anything else.

A released checkpoint that is not safetensors is a pickle: unpickling calls whatever
the file names, so it can run any code. The rules here: the globals a file refers to
are read statically from its opcodes (nothing is unpickled); a file referring only to
tensors and plain data (numpy arrays included) is read with
``torch.load(weights_only=True)`` or, for a plain pickle, a restricted unpickler; any
other global makes the file "needs full unpickling", refused unless the caller trusts
the file (``--trust-pickle``).
"""
from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import List

# numpy array reconstruction: builds arrays from bytes, runs nothing else (detectron2
# files often hold numpy arrays). Everything else a weights_only load refuses stays refused.
_NUMPY_DATA_GLOBALS = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
                       "numpy.ndarray", "numpy.dtype", "numpy.core.multiarray.scalar",
                       "numpy._core.multiarray.scalar")


def pickle_globals(path: Path) -> List[str]:
    """The module.name globals a pickle or torch file refers to, read statically from
    its opcodes (nothing is unpickled)."""
    data: List[bytes] = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            data = [zf.read(n) for n in zf.namelist() if n.endswith(".pkl")]
    else:
        data = [Path(path).read_bytes()]
    found = set()
    for blob in data:
        stream = io.BytesIO(blob)
        for _ in range(8):   # a legacy torch file is several pickles in a row, then raw bytes
            if stream.tell() >= len(blob):
                break
            try:
                found |= _globals_of_one_pickle(stream)
            except Exception:   # past the pickles (tensor storage bytes) or not a pickle
                break
    return sorted(found)


def _globals_of_one_pickle(stream) -> set:
    """GLOBAL / INST names, and STACK_GLOBAL's two strings followed through the memo.
    A STACK_GLOBAL whose operands cannot be followed counts as an unknown global, so
    the file is treated as needing full unpickling (never the other way round)."""
    found, memo, recent = set(), {}, []   # recent: the last pushed values (str or None)
    memo_next = 0
    string_ops = ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                  "SHORT_BINSTRING", "BINSTRING", "STRING")
    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        top = recent[-1] if recent else None
        if name in ("GLOBAL", "INST"):
            found.add(str(arg).replace(" ", "."))
            recent.append(None)
        elif name in string_ops:
            recent.append(str(arg))
        elif name == "MEMOIZE":
            memo[memo_next] = top
            memo_next += 1
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = top
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            recent.append(memo.get(arg))
        elif name == "STACK_GLOBAL":
            mod, attr = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
            found.add(f"{mod}.{attr}" if isinstance(mod, str) and isinstance(attr, str)
                      else "<a global the scan cannot name>")
            recent.append(None)
        elif name not in ("PROTO", "FRAME", "STOP"):
            recent.append(None)
        del recent[:-2]
    return found


def _numpy_safe_globals() -> list:
    import numpy as np

    out = [np.ndarray, np.dtype]
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            m = __import__(mod, fromlist=["_reconstruct", "scalar"])
            out += [m._reconstruct, m.scalar]
            break
        except (ImportError, AttributeError):
            continue
    out += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return out


_TORCH_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


def _load_weights_only(path: Path):
    """torch files (zip or legacy) through torch.load(weights_only=True); a plain pickle
    (e.g. a detectron2 .pkl, often protocol 4, which torch's restricted unpickler does not
    read) through _DataUnpickler: numpy arrays and containers only."""
    import torch

    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            first = _DataUnpickler(f, encoding="latin1").load()
        if first != _TORCH_LEGACY_MAGIC:
            return first
    return torch.load(str(path), map_location="cpu", weights_only=True)


class _DataUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, numbers, strings and containers; any other global is refused
    before anything is called (the standard 'restricting globals' rule)."""

    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if full in _NUMPY_DATA_GLOBALS or full.startswith("numpy.dtypes.") \
                or full == "collections.OrderedDict":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {full} is not allowed (not plain data)")


_SAFE_PREFIXES = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.slice",
                  "builtins.bytearray", "builtins.complex", "_codecs.encode")


def unsafe_globals(path: Path) -> List[str]:
    """The globals of ``path`` that are neither tensors nor plain data (empty: safe to read
    with ``load_weights_only``)."""
    return [g for g in pickle_globals(path) if not g.startswith(_SAFE_PREFIXES)
            and g not in _NUMPY_DATA_GLOBALS and not g.startswith("numpy.dtypes.")]


def load_weights_only(path: Path):
    """A file whose globals are all safe (``unsafe_globals`` empty): tensors and numpy
    arrays only, nothing else is called."""
    import torch

    with torch.serialization.safe_globals(_numpy_safe_globals()):
        return _load_weights_only(path)


__all__ = ["pickle_globals", "unsafe_globals", "load_weights_only"]
