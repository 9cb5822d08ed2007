"""The one state-dict reader and the one strict layout check.

Every weights file (an engine's checkpoint at start-up, ``ovseg-weights convert`` and
``verify``, bundles) is read by ``read_state_dict`` and checked by ``compare_layout`` /
``inference_part``, so loading and the weights tool can never disagree about a file.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from .errors import WeightsToolError
from .pickle_safety import load_weights_only, unsafe_globals

Layout = Dict[str, Tuple[int, ...]]


def read_state_dict(path: Path, trust_pickle: bool = False,
                    say: Callable[[str], None] = print) -> Dict[str, object]:
    """The flat state dict of a weights file (safetensors, or a torch/pickle file read
    with weights_only=True; numpy arrays allowed), unwrapped from ``state_dict`` /
    ``model`` and a ``module.`` prefix. A file needing full unpickling is refused
    unless ``trust_pickle``; the error names what it would run."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsToolError(f"{path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path), device="cpu")
    else:
        unsafe = unsafe_globals(path)
        if unsafe and not trust_pickle:
            raise WeightsToolError(
                f"{path} needs full unpickling: it refers to {', '.join(unsafe[:8])}"
                + (f" and {len(unsafe) - 8} more" if len(unsafe) > 8 else "")
                + ", which are neither tensors nor plain data. Unpickling calls what a file names, "
                "so it can run any code; it was not loaded. If the file comes from a source you "
                "trust, convert it with --trust-pickle.")
        try:
            if unsafe:   # trusted by the caller
                say(f"WARNING: unpickling {path} fully (--trust-pickle); it refers to "
                    f"{', '.join(unsafe[:8])}")
                sd = torch.load(str(path), map_location="cpu", weights_only=False)
            else:
                sd = load_weights_only(path)
        except pickle.UnpicklingError as exc:
            raise WeightsToolError(
                f"{path} needs full unpickling: the weights_only loader refused it "
                f"({str(exc).splitlines()[0][:300]}). It was not loaded. If the file comes from "
                "a source you trust, convert it with --trust-pickle.") from exc
        except Exception as exc:
            raise WeightsToolError(f"cannot read {path}: {type(exc).__name__}: "
                                   f"{str(exc)[:400]}") from exc
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsToolError(f"{path} holds a {type(sd).__name__}, not a state dict")
    return {k[7:] if k.startswith("module.") else k: _tensor(v) for k, v in sd.items()}


def _tensor(value: object) -> object:
    """numpy arrays (detectron2 files hold them) as torch tensors; anything else as it is."""
    import numpy as np
    import torch

    if isinstance(value, np.ndarray):
        # np.array, not np.ascontiguousarray: that one turns 0-d arrays into 1-d
        return torch.from_numpy(np.array(value, order="C", copy=True))
    return value


def listing(keys: Iterable[str], limit: int = 15) -> str:
    """Sorted keys, the first ``limit`` of them, for error messages."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


@dataclass
class LayoutReport:
    """How a set of keys and shapes differs from a layout (empty lists: it fits)."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    #: "key: checkpoint (shape) vs model (shape)"
    shapes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shapes)

    def problems(self) -> List[str]:
        out = []
        if self.missing:
            out.append(f"missing keys ({len(self.missing)}): {listing(self.missing)}")
        if self.unexpected:
            out.append(f"unexpected keys ({len(self.unexpected)}): {listing(self.unexpected)}")
        if self.shapes:
            out.append(f"shape mismatches ({len(self.shapes)}): {listing(self.shapes, 8)}")
        return out


def compare_layout(found: Mapping[str, Tuple[int, ...]], layout: Layout) -> LayoutReport:
    """``found``: key -> shape of the inference keys of a file."""
    return LayoutReport(
        missing=[k for k in layout if k not in found],
        unexpected=[k for k in found if k not in layout],
        shapes=[f"{k}: checkpoint {tuple(s)} vs model {layout[k]}" for k, s in found.items()
                if k in layout and tuple(s) != layout[k]])


def inference_part(state: Mapping[str, object], layout: Layout,
                   keep: Optional[Callable[[str], bool]] = None
                   ) -> Tuple[Dict[str, object], List[str]]:
    """The strict check: the keys of ``state`` that ``keep`` selects (all when None) and
    the problems that stop them loading -- missing, unexpected and mis-shaped keys
    against ``layout``, and values that are not tensors (empty list: it fits)."""
    import torch

    kept = {k: v for k, v in state.items() if keep is None or keep(k)}
    shapes = {k: tuple(v.shape) for k, v in kept.items() if isinstance(v, torch.Tensor)}
    problems = compare_layout(shapes, layout).problems()
    not_tensors = [k for k in kept if k not in shapes]
    if not_tensors:
        problems.append(f"not tensors ({len(not_tensors)}): {listing(not_tensors)}")
    return kept, problems


__all__ = ["read_state_dict", "Layout", "LayoutReport", "compare_layout", "inference_part",
           "listing"]
