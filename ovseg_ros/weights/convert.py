"""``convert``: a released training file -> safetensors holding the inference keys only,
strictly checked against the engine's ``checkpoint_layout``, plus a manifest."""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Callable, Optional

from ..config import Config, make_config
from ..registry import get_engine
from .errors import WeightsToolError
from .files import MANIFEST_FORMAT, manifest_path, sha256_of
from .state_dict import inference_part, read_state_dict


def engine_class(engine: str):
    try:
        cls = get_engine(engine)
    except KeyError as exc:
        raise WeightsToolError(f"engine {engine!r} is not available here ({exc.args[0]})") from exc
    if not getattr(cls, "checkpoint_setting", ""):
        raise WeightsToolError(f"engine {engine!r} has no checkpoint of its own (its class "
                               "declares no checkpoint_setting): nothing to convert")
    return cls


def _layout_config(cfg: Config, engine: str) -> dict:
    """The engine-group settings a layout depends on (all of them, as plain values)."""
    return {k: v for k, v in cfg.values.items() if k.startswith(engine + ".")}


def _engine_config(engine: str, cfg: Optional[Config]) -> Config:
    if cfg is None:
        return make_config({"engine": engine})
    if cfg["engine"] != engine:
        return make_config(dict(cfg.values, engine=engine))
    return cfg


def convert(src: Path, dst: Path, engine: str, cfg: Optional[Config] = None,
            trust_pickle: bool = False, say: Callable[[str], None] = print) -> dict:
    """Released file -> safetensors with the inference keys + manifest. Returns the manifest."""
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise WeightsToolError(f"output {dst} must end in .safetensors")
    cls = engine_class(engine)
    cfg = _engine_config(engine, cfg)
    state = read_state_dict(src, trust_pickle=trust_pickle, say=say)
    kept, problems = inference_part(state, cls.checkpoint_layout(cfg), cls.is_inference_key)
    if problems:
        raise WeightsToolError(f"{src} does not fit engine {engine!r} with these settings: "
                               + "; ".join(problems) + ". Check the engine, the file and the "
                               f"{engine}.* settings (--config).")
    tensors = {k: v.detach().cpu().contiguous() for k, v in kept.items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    save_file(tensors, str(part), metadata={"format": MANIFEST_FORMAT, "engine": engine})
    part.replace(dst)
    manifest = {
        "format": MANIFEST_FORMAT,
        "file": dst.name,
        "engine": engine,
        "sha256": sha256_of(dst),
        "size": dst.stat().st_size,
        "keys": len(tensors),
        "skipped_keys": len(state) - len(kept),
        "settings": _layout_config(cfg, engine),
        "source": {"file": src.name, "sha256": sha256_of(src), "size": src.stat().st_size},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    manifest_path(dst).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


__all__ = ["engine_class", "convert"]
