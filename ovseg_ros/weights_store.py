"""What weights a preset needs, where they are, and how to bring them (ROS-free).

The logic behind ``ovseg-weights`` (ovseg_ros/tools/weights_cli.py; docs/weights.md):

* ``requirements(cfg)``: every file a config needs -- open_clip / timm pretrained
  weights (huggingface_hub cache), local files named by ``*_checkpoint`` settings,
  the engine's released checkpoint -- each with where it is published, what is
  known of its size / checksum, and whether it is on disk now;
* ``fetch``: downloads what is missing through open_clip / huggingface_hub (their
  normal cache, their progress bars) or from the published location; offline it
  fails at once with the list of what is missing and how to bring it;
* ``convert``: a released training file -> safetensors holding the inference keys
  only, strictly checked against the engine's ``checkpoint_layout``, plus a manifest;
  pickles are read with ``torch.load(weights_only=True)`` and nothing else unless
  the caller trusts the file;
* ``verify``: full SHA-256 against the manifest and the strict key check again;
* ``pack`` / ``unpack``: a self-contained bundle (weights, manifests, the preset
  config pointing at them) for machines without network.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import pickle
import pickletools
import shutil
import socket
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple
from urllib.parse import urlparse

import yaml

from .config import Config, ConfigError, make_config, read_config_file
from .registry import get_engine, list_engines
from .weights import (BUNDLE_MANIFEST, TINY_MODEL_PREFIXES, WeightsError,
                      register_tiny_models_if_named, resolve_path)

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = "ovseg_ros.weights/1"
BUNDLE_FORMAT = "ovseg_ros.bundle/1"
BUNDLE_CONFIG = "config.yaml"
PROBE_TIMEOUT_S = 3.0
_CHUNK = 1 << 22

# Released checkpoints, as their authors publish them. Sizes and SHA-256 are not
# published for any of them ("unknown"); OVSeg's page gives the first six hex digits
# of the MD5 only. Download pages: Google Drive links of each project's README.
_DRIVE = "https://drive.google.com/file/d/{}/view"
_DRIVE_DOWNLOAD = "https://drive.usercontent.google.com/download?id={}&export=download&confirm=t"


@dataclass(frozen=True)
class Release:
    engine: str
    name: str                 # file name as published
    description: str
    drive_id: str
    published_in: str         # where the link is published
    md5_prefix: str = ""      # what the authors give of the checksum, if anything
    sha256: str = ""
    size: Optional[int] = None
    #: engine settings the file needs (e.g. MAFT+'s CDT variant)
    settings: Tuple[Tuple[str, object], ...] = ()

    @property
    def page(self) -> str:
        return _DRIVE.format(self.drive_id)

    @property
    def download_url(self) -> str:
        return _DRIVE_DOWNLOAD.format(self.drive_id)


RELEASES: Tuple[Release, ...] = (
    Release("fcclip", "fcclip_cocopan.pth", "FC-CLIP ConvNeXt-Large, COCO panoptic",
            "1-91PIns86vyNaL3CzMmDD39zKGnPMtvj", "github.com/bytedance/fc-clip README, model zoo"),
    Release("maftplus", "maftp_l.pth", "MAFT+ Large, semantic", "1EQo5guVuKkSSZj4bv0FQN_4X9h_Rwfe5",
            "github.com/jiaosiyu1999/MAFT-Plus README, pretrained weights",
            settings=(("maftplus.cdt_variant", "semantic"),)),
    Release("maftplus", "maftp_l_pano.pth", "MAFT+ Large, panoptic",
            "1znk_uco8fwvbA0kndy4kGyVp22KbQr6g",
            "github.com/jiaosiyu1999/MAFT-Plus README, pretrained weights (panoptic)",
            settings=(("maftplus.cdt_variant", "panoptic"),)),
    Release("ovseg", "ovseg_swinbase_vitL14_ft_mpt.pth", "OVSeg Swin-B + CLIP ViT-L/14",
            "1cn-ohxgXDrDfkzC1QdO-fi8IjbjXmgKy",
            "github.com/facebookresearch/ov-seg GETTING_STARTED.md", md5_prefix="526080"),
    Release("ovseg", "ovseg_R101c_vitB16_ft_mpt.pth", "OVSeg R101c + CLIP ViT-B/16",
            "1ZmeFMEkhuLqaWkhz4t4IlQ8YflrYja8q",
            "github.com/facebookresearch/ov-seg GETTING_STARTED.md", md5_prefix="c746f4"),
)


class WeightsToolError(RuntimeError):
    """A weights command cannot do what was asked; the message says what and how to fix it."""


# --- environment ---------------------------------------------------------------------------
def _truthy(value: Optional[str]) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def hf_hub_cache() -> Path:
    """The huggingface_hub cache, resolved as huggingface_hub does (HF_HUB_CACHE, then
    HUGGINGFACE_HUB_CACHE, then HF_HOME/hub, then XDG_CACHE_HOME/huggingface/hub), read
    now rather than at import."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def offline_reason(timeout: float = PROBE_TIMEOUT_S) -> Optional[str]:
    """None when the Hugging Face Hub looks reachable, else why not. Never waits longer
    than ``timeout`` (name resolution included: the probe runs on its own thread)."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE")):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlparse(proxy if proxy else endpoint)
    host = target.hostname or "huggingface.co"
    port = target.port or (443 if target.scheme in ("https", "") else 80)
    result: Dict[str, object] = {}

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result["ok"] = True
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if result.get("ok"):
        return None
    what = f"{host}:{port}" + (" (the HTTPS proxy)" if proxy else "")
    if "error" in result:
        return f"cannot reach {what}: {result['error']}"
    return f"no answer from {what} within {timeout:.0f} s"


def default_config_dir() -> Path:
    """config/ of the source tree, else the installed share/ovseg_ros/config."""
    here = Path(__file__).resolve().parent.parent / "config"
    if here.is_dir():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("ovseg_ros")) / "config"
    except Exception:   # not a ROS install either: no preset files, engine defaults only
        return here


# --- presets and requirements -----------------------------------------------------------
@dataclass
class Preset:
    name: str
    source: str               # the file, or "defaults of engine X"
    cfg: Config
    raw: dict                 # the file's own settings (what a bundle's config starts from)


def _load_preset_file(path: Path) -> Preset:
    raw = read_config_file(path)
    return Preset(path.stem, str(path), make_config(raw), raw)


def list_presets(config_dir: Optional[Path] = None) -> List[Preset]:
    """Every config file in ``config_dir`` and every engine's defaults (``engine:<name>``)."""
    config_dir = config_dir or default_config_dir()
    presets = [_load_preset_file(p) for p in sorted(config_dir.glob("*.yaml"))]
    for name in list_engines():
        raw = {"engine": name}
        presets.append(Preset(f"engine:{name}", f"defaults of engine {name}", make_config(raw),
                              raw))
    return presets


def resolve_preset(name: str, config_dir: Optional[Path] = None) -> Preset:
    """A preset by name (``fcclip``, ``engine:maftplus``) or a config file path."""
    path = Path(os.path.expanduser(name))
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return _load_preset_file(path)
    if name.startswith("engine:"):
        engine = name.split(":", 1)[1]
        if engine not in list_engines():
            raise WeightsToolError(f"no engine {engine!r}; engines: {', '.join(list_engines())}")
        raw = {"engine": engine}
        return Preset(name, f"defaults of engine {engine}", make_config(raw), raw)
    config_dir = config_dir or default_config_dir()
    candidate = config_dir / f"{name}.yaml"
    if candidate.is_file():
        return _load_preset_file(candidate)
    known = [p.stem for p in sorted(config_dir.glob("*.yaml"))] + \
        [f"engine:{e}" for e in list_engines()]
    raise WeightsToolError(f"no preset {name!r}: give a config file or one of {', '.join(known)}")


@dataclass
class Need:
    """One weights file a config needs."""

    kind: str                  # open_clip | timm | file | released
    setting: str               # the config key that names it
    what: str                  # model / tag / file name
    source: str                # where it is published
    present: bool
    location: str              # where it is (present) or would be (missing)
    hint: str = ""             # how to bring it
    size: Optional[int] = None
    sha256: str = ""
    checksum_note: str = ""    # published checksum facts other than a SHA-256
    # for fetch / pack
    repo_id: str = ""
    filenames: Tuple[str, ...] = ()
    url: str = ""
    path: Optional[Path] = None
    release: Optional[Release] = None
    fetchable: bool = True

    def describe(self) -> str:
        size = f"{self.size} bytes" if self.size is not None else "size unknown"
        sha = self.sha256 or "sha256 unknown"
        extra = f", {self.checksum_note}" if self.checksum_note else ""
        return f"{self.kind} {self.what} [{self.setting}] from {self.source} ({size}, {sha}{extra})"


def _group(cfg: Config) -> str:
    return cfg["engine"]


def _has(cfg: Config, key: str) -> bool:
    return key in cfg.values


def _hf_cached(repo_id: str, filenames: Iterable[str]) -> Optional[str]:
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        hit = try_to_load_from_cache(repo_id, name, cache_dir=str(hf_hub_cache()))
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def _open_clip_need(cfg: Config, g: str) -> Optional[Need]:
    model, tag = cfg[f"{g}.clip_model"], cfg.get(f"{g}.clip_pretrained", "")
    setting = f"{g}.clip_pretrained"
    if cfg.get(f"{g}.clip_checkpoint"):
        return _file_need(cfg, f"{g}.clip_checkpoint", f"open_clip {model} weights")
    if not tag:
        return Need("open_clip", setting, f"{model} (no tag)", "-", False, "-",
                    hint=f"set '{setting}' (an open_clip tag) or '{g}.clip_checkpoint'",
                    fetchable=False)
    import open_clip

    register_tiny_models_if_named(model)
    pcfg = open_clip.get_pretrained_cfg(model, tag)
    what = f"{model} / {tag}"
    if not pcfg:
        return Need("open_clip", setting, what, "-", False, "-",
                    hint=f"open_clip has no pretrained tag {tag!r} for {model!r} (see "
                         "open_clip.list_pretrained()); fix the config", fetchable=False)
    hub = pcfg.get("hf_hub", "")
    if hub:
        repo_id, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else \
            (hub.rstrip("/"), "")
        if filename:
            names = (filename[:-4] + ".safetensors", filename) if filename.endswith(
                (".bin", ".pth")) else (filename,)
        else:   # open_clip's default names, safetensors first (open_clip/pretrained.py)
            names = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        hit = _hf_cached(repo_id, names)
        return Need("open_clip", setting, what, f"huggingface.co/{repo_id}", bool(hit),
                    hit or f"{hf_hub_cache()} (models--{repo_id.replace('/', '--')})",
                    hint=f"with network: ovseg-weights fetch (or open_clip.create_model({model!r}, "
                         f"pretrained={tag!r}) once)",
                    repo_id=repo_id, filenames=names, path=Path(hit) if hit else None)
    url = pcfg.get("url", "")
    target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
    return Need("open_clip", setting, what, url, target.is_file(), str(target),
                hint="with network: ovseg-weights fetch", url=url,
                path=target if target.is_file() else None)


def _timm_need(cfg: Config, g: str) -> Optional[Need]:
    model = cfg[f"{g}.vfm_model"]
    if cfg.get(f"{g}.vfm_checkpoint"):
        return _file_need(cfg, f"{g}.vfm_checkpoint", f"timm {model} weights")
    import timm.models

    register_tiny_models_if_named(model)
    setting = f"{g}.vfm_model"
    try:
        pcfg = timm.models.get_pretrained_cfg(model)
    except Exception:   # an unknown name: the config check reports it
        pcfg = None
    repo_id = getattr(pcfg, "hf_hub_id", "") if pcfg is not None else ""
    if not repo_id:
        return Need("timm", setting, model, "-", False, "-",
                    hint=f"timm publishes no weights for {model!r}; set '{g}.vfm_checkpoint'",
                    fetchable=False)
    repo_id = repo_id.split("@", 1)[0]
    filename = getattr(pcfg, "hf_hub_filename", "") or ""
    names = (filename,) if filename else ("model.safetensors", "pytorch_model.bin")
    hit = _hf_cached(repo_id, names)
    return Need("timm", setting, model, f"huggingface.co/{repo_id}", bool(hit),
                hit or f"{hf_hub_cache()} (models--{repo_id.replace('/', '--')})",
                hint="with network: ovseg-weights fetch (or "
                     f"timm.create_model({model!r}, pretrained=True) once)",
                repo_id=repo_id, filenames=names,
                path=Path(hit) if hit else None)


def _file_need(cfg: Config, setting: str, what: str) -> Need:
    path = resolve_path(cfg[setting], cfg["weights_dir"])
    return Need("file", setting, what, "local file", path.is_file(), str(path),
                hint=f"copy the file there or fix '{setting}'",
                path=path if path.is_file() else None,
                fetchable=False)


def _release_for(cfg: Config, g: str) -> Optional[Release]:
    """The published file this config's checkpoint setting names (by file stem), else the
    engine's release matching its settings."""
    stem = Path(cfg[f"{g}.checkpoint"]).stem if cfg[f"{g}.checkpoint"] else ""
    candidates = [r for r in RELEASES if r.engine == g]
    for r in candidates:
        if stem and Path(r.name).stem == stem:
            return r
    if stem:
        return None
    for r in candidates:
        if all(cfg.get(k) == v for k, v in r.settings):
            return r
    return None


def _released_need(cfg: Config, g: str) -> Need:
    setting = f"{g}.checkpoint"
    rel = _release_for(cfg, g)
    source = f"{rel.page} ({rel.published_in})" if rel else "not a published file name"
    note = f"published md5 begins {rel.md5_prefix}" if rel and rel.md5_prefix else ""
    common = dict(size=rel.size if rel else None, sha256=rel.sha256 if rel else "",
                  checksum_note=note, release=rel, url=rel.download_url if rel else "")
    if not cfg[setting]:
        name = rel.name if rel else "the released checkpoint"
        return Need("released", setting, name, source, False, "(not set)",
                    hint=f"set '{setting}' (e.g. {name}, relative to weights_dir), then "
                         "ovseg-weights fetch", fetchable=False, **common)
    path = resolve_path(cfg[setting], cfg["weights_dir"])
    what = Path(cfg[setting]).name + (f" ({rel.description})" if rel else "")
    hint = ("with network: ovseg-weights fetch" if rel else "copy the file there") + \
        (f"; or download it in a browser from {rel.page} to {path}" if rel else "")
    return Need("released", setting, what, source, path.is_file(), str(path), hint=hint,
                path=path if path.is_file() else None, fetchable=rel is not None, **common)


def _local_facts(need: Need) -> Need:
    """Size of a file on disk, and its SHA-256 where the huggingface_hub cache names its
    blob by it (files stored with Git LFS); nothing is read."""
    if need.present and need.path is not None:
        real = need.path.resolve()
        need.size = need.size or real.stat().st_size
        if not need.sha256 and len(real.name) == 64 and \
                all(c in "0123456789abcdef" for c in real.name) and "blobs" in real.parts:
            need.sha256 = real.name
    return need


def requirements(cfg: Config) -> List[Need]:
    """Every weights file ``cfg`` needs ([] with random_init: nothing is read)."""
    if cfg["random_init"]:
        return []
    g = _group(cfg)
    needs: List[Need] = []
    if _has(cfg, f"{g}.clip_model") and (_has(cfg, f"{g}.clip_pretrained")
                                         or _has(cfg, f"{g}.clip_checkpoint")):
        needs.append(_open_clip_need(cfg, g))
    if _has(cfg, f"{g}.vfm_model"):
        needs.append(_timm_need(cfg, g))
    if _has(cfg, f"{g}.checkpoint"):
        needs.append(_released_need(cfg, g))
    return [_local_facts(n) for n in needs if n is not None]


# --- fetch --------------------------------------------------------------------------------
def _download(url: str, target: Path, expected_sha256: str = "") -> None:
    """url -> target through a .part file, with a progress bar; the SHA-256 is checked
    when one is known."""
    import urllib.request

    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    h = hashlib.sha256()
    req = urllib.request.Request(url, headers={"User-Agent": "ovseg-weights"})
    with urllib.request.urlopen(req, timeout=30) as resp, open(part, "wb") as out:
        kind = resp.headers.get("Content-Type", "")
        if kind.startswith("text/html"):
            raise WeightsToolError(f"{url} answered with a web page, not the file (Google Drive "
                                   "does this when a file's download quota is exceeded)")
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
    if expected_sha256 and h.hexdigest() != expected_sha256:
        part.unlink()
        raise WeightsToolError(f"{url}: SHA-256 {h.hexdigest()} differs from the published "
                               f"{expected_sha256}; nothing kept")
    part.replace(target)


def fetch_need(need: Need) -> str:
    """Download one missing file; returns where it is now."""
    if need.kind == "open_clip":
        from huggingface_hub import hf_hub_download

        if need.repo_id:
            last: Optional[Exception] = None
            for name in need.filenames:   # safetensors first, as open_clip does
                try:
                    return hf_hub_download(need.repo_id, name, cache_dir=str(hf_hub_cache()))
                except Exception as exc:   # this name absent: the next one
                    last = exc
            raise WeightsToolError(f"cannot download {need.what} from {need.source}: {last}")
        _download(need.url, Path(need.location))
        return need.location
    if need.kind == "timm":
        from huggingface_hub import hf_hub_download

        last = None
        for name in need.filenames:
            try:
                return hf_hub_download(need.repo_id, name, cache_dir=str(hf_hub_cache()))
            except Exception as exc:
                last = exc
        raise WeightsToolError(f"cannot download {need.what} from {need.source}: {last}")
    if need.kind == "released" and need.release is not None:
        _download(need.release.download_url, Path(need.location), need.release.sha256)
        return need.location
    raise WeightsToolError(f"{need.what} [{need.setting}] cannot be downloaded: {need.hint}")


def fetch(cfg: Config, say: Callable[[str], None] = print,
          probe: Callable[[], Optional[str]] = offline_reason) -> List[Need]:
    """Download what ``cfg`` is missing. Returns what is still missing (empty = all there).
    Offline, downloads nothing and returns the missing list at once."""
    missing = [n for n in requirements(cfg) if not n.present]
    if not missing:
        return []
    reason = probe()
    if reason is not None:
        say(f"offline ({reason}): nothing downloaded. Missing:")
        for n in missing:
            say(f"  - {n.describe()}\n      expected at {n.location}\n      bring it: {n.hint}")
        say("On a machine with network: ovseg-weights fetch <preset>, then ovseg-weights pack "
            "<preset> bundle.tar and ovseg-weights unpack bundle.tar <dir> here.")
        return missing
    still = []
    for n in missing:
        if not n.fetchable:
            say(f"cannot download {n.what} [{n.setting}]: {n.hint}")
            still.append(n)
            continue
        say(f"downloading {n.what} from {n.source}")
        try:
            say(f"  -> {fetch_need(n)}")
        except Exception as exc:   # keep going: report every failure at the end
            say(f"  failed: {type(exc).__name__}: {exc}")
            still.append(n)
    return still


# --- reading released files safely --------------------------------------------------------
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


def read_released(path: Path, trust_pickle: bool = False,
                  say: Callable[[str], None] = print) -> Dict[str, object]:
    """The flat state dict of a released file (safetensors, or a torch/pickle file read
    with weights_only=True; numpy arrays allowed). A file needing full unpickling is
    refused unless ``trust_pickle``; the error names what it would run."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsToolError(f"{path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path), device="cpu")
    else:
        refs = pickle_globals(path)
        unsafe = [g for g in refs if not g.startswith(("torch.", "collections.OrderedDict",
                                                       "builtins.set", "builtins.slice",
                                                       "builtins.bytearray", "builtins.complex",
                                                       "_codecs.encode"))
                  and g not in _NUMPY_DATA_GLOBALS and not g.startswith("numpy.dtypes.")]
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
                with torch.serialization.safe_globals(_numpy_safe_globals()):
                    sd = _load_weights_only(path)
        except WeightsToolError:
            raise
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
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


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


# --- manifests, convert, verify -----------------------------------------------------------
def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_path(weights: Path) -> Path:
    return weights.with_name(weights.name + MANIFEST_SUFFIX)


def engine_class(engine: str):
    try:
        cls = get_engine(engine)
    except KeyError as exc:
        raise WeightsToolError(f"engine {engine!r} is not available here ({exc.args[0]})") from exc
    if not (hasattr(cls, "checkpoint_layout") and hasattr(cls, "is_inference_key")):
        raise WeightsToolError(f"engine {engine!r} has no released checkpoint (no "
                               "checkpoint_layout / is_inference_key)")
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


def _shapes_of_state(state: Dict[str, object]) -> Tuple[Dict[str, Tuple[int, ...]], List[str]]:
    import numpy as np
    import torch

    shapes, bad = {}, []
    for k, v in state.items():
        if isinstance(v, (torch.Tensor, np.ndarray)):
            shapes[k] = tuple(v.shape)
        else:
            bad.append(k)
    return shapes, bad


def convert(src: Path, dst: Path, engine: str, cfg: Optional[Config] = None,
            trust_pickle: bool = False, say: Callable[[str], None] = print) -> dict:
    """Released file -> safetensors with the inference keys + manifest. Returns the manifest."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from .models.checkpoint import compare_layout

    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise WeightsToolError(f"output {dst} must end in .safetensors")
    cls = engine_class(engine)
    cfg = _engine_config(engine, cfg)
    state = read_released(src, trust_pickle=trust_pickle, say=say)
    kept = {k: v for k, v in state.items() if cls.is_inference_key(k)}
    shapes, not_tensors = _shapes_of_state(kept)
    report = compare_layout(shapes, cls.checkpoint_layout(cfg))
    problems = report.problems()
    if not_tensors:
        problems.append(f"not tensors ({len(not_tensors)}): {', '.join(sorted(not_tensors)[:10])}")
    if problems:
        raise WeightsToolError(f"{src} does not fit engine {engine!r} with these settings: "
                               + "; ".join(problems) + ". Check the engine, the file and the "
                               f"{engine}.* settings (--config).")
    # np.array, not np.ascontiguousarray: that one turns 0-d arrays into 1-d
    tensors = {k: (torch.from_numpy(np.array(v, order="C", copy=True)) if isinstance(v, np.ndarray)
                   else v).detach().cpu().contiguous() for k, v in kept.items()}
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


@dataclass
class FileCheck:
    path: Path
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_hash(path: Path, sha256: str, size: Optional[int], check: FileCheck) -> None:
    if not path.is_file():
        check.problems.append(f"missing file {path}")
        return
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        check.problems.append(f"size {actual_size} bytes, manifest says {size}: truncated or "
                              "replaced file")
    digest = sha256_of(path)
    if digest != sha256:
        check.problems.append(f"sha256 mismatch: file {digest}, manifest {sha256}: the file "
                              "changed after it was written (corrupted copy?)")
    else:
        check.notes.append(f"sha256 ok ({digest[:16]}...)")


def verify_weights(path: Path) -> FileCheck:
    """One converted file against its manifest: hash, key count, strict layout check."""
    from safetensors import safe_open

    from .models.checkpoint import compare_layout

    path = Path(path)
    if path.name.endswith(MANIFEST_SUFFIX):
        path = path.with_name(path.name[:-len(MANIFEST_SUFFIX)])
    check = FileCheck(path)
    mpath = manifest_path(path)
    if not mpath.is_file():
        check.problems.append(f"no manifest {mpath.name} beside it (write one with ovseg-weights "
                              "convert)")
        return check
    try:
        manifest = json.loads(mpath.read_text())
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
    except (ValueError, OSError) as exc:
        check.problems.append(f"manifest {mpath.name} is not readable: {exc}")
        return check
    _check_hash(path, manifest["sha256"], manifest.get("size"), check)
    if not path.is_file():
        return check
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:
        check.problems.append(f"not a readable safetensors file: {type(exc).__name__}: {exc}")
        return check
    if len(shapes) != manifest["keys"]:
        check.problems.append(f"{len(shapes)} keys, manifest says {manifest['keys']}")
    engine = manifest["engine"]
    try:
        cls = engine_class(engine)
        cfg = make_config({"engine": engine, **manifest.get("settings", {})})
        report = compare_layout(shapes, cls.checkpoint_layout(cfg))
    except (WeightsToolError, ConfigError, WeightsError) as exc:
        check.problems.append(f"cannot check the keys against engine {engine!r}: {exc}")
        return check
    if report.ok:
        check.notes.append(f"{len(shapes)} keys match engine {engine!r}")
    else:
        check.problems += [f"engine {engine!r}: {p}" for p in report.problems()]
    return check


def verify(target: Path) -> List[FileCheck]:
    """A converted file, a bundle directory (every file it lists) or a directory of
    converted files."""
    target = Path(os.path.expanduser(str(target)))
    if target.is_dir():
        bundle = target / BUNDLE_MANIFEST
        if bundle.is_file():
            return verify_bundle(target)
        found = sorted(target.glob("*" + MANIFEST_SUFFIX))
        if not found:
            return [FileCheck(target, [f"no {BUNDLE_MANIFEST} and no *{MANIFEST_SUFFIX} in "
                                       f"{target}"])]
        return [verify_weights(m) for m in found]
    if not target.exists():
        return [FileCheck(target, [f"{target} does not exist"])]
    if target.suffix != ".safetensors" and not target.name.endswith(MANIFEST_SUFFIX):
        return [FileCheck(target, [f"{target.name} is not a converted file (.safetensors with a "
                                   "manifest); convert a released file with ovseg-weights "
                                   "convert first"])]
    return [verify_weights(target)]


def verify_bundle(root: Path) -> List[FileCheck]:
    try:
        bundle = json.loads((root / BUNDLE_MANIFEST).read_text())
        if bundle.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"format {bundle.get('format')!r}")
    except (ValueError, OSError) as exc:
        return [FileCheck(root / BUNDLE_MANIFEST, [f"not a readable bundle manifest: {exc}"])]
    checks = []
    for entry in bundle["files"]:
        path = root / entry["path"]
        if path.name.endswith(".safetensors") and manifest_path(path).is_file() \
                and entry.get("kind") == "released":
            check = verify_weights(path)
        else:
            check = FileCheck(path)
        if not any("sha256" in p or "missing file" in p for p in check.problems) and \
                not any(n.startswith("sha256 ok") for n in check.notes):
            _check_hash(path, entry["sha256"], entry.get("size"), check)
        checks.append(check)
    cfg_path = root / bundle.get("config", BUNDLE_CONFIG)
    check = FileCheck(cfg_path)
    try:
        make_config(cfg_path)
        check.notes.append("preset config valid")
    except ConfigError as exc:
        check.problems.append(f"preset config: {exc}")
    checks.append(check)
    return checks


# --- bundles ------------------------------------------------------------------------------
def _nest(flat: dict) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        d = nested
        *groups, leaf = key.split(".")
        for g in groups:
            d = d.setdefault(g, {})
        d[leaf] = value
    return nested


def _flat_raw(raw: dict) -> dict:
    from .config import _flatten

    return _flatten(raw)


def _write_bundle_config(path: Path, flat: dict) -> None:
    path.write_text("# Preset of an ovseg_ros weights bundle (ovseg-weights pack); weights_dir is\n"
                    "# this folder, written by ovseg-weights unpack.\n"
                    + yaml.safe_dump({"/**": {"ros__parameters": _nest(flat)}}, sort_keys=False))


def pack(preset: Preset, out: Path, trust_pickle: bool = False,
         say: Callable[[str], None] = print) -> dict:
    """Everything ``preset`` needs, in one tar: weights (released checkpoints converted to
    safetensors), manifests, the preset config pointing at them, a bundle manifest."""
    import tempfile

    cfg = preset.cfg
    if cfg["random_init"]:
        raise WeightsToolError(f"preset {preset.name} uses random_init: it needs no weights")
    needs = requirements(cfg)
    missing = [n for n in needs if not n.present]
    if missing:
        raise WeightsToolError("cannot pack, missing: " + "; ".join(
            f"{n.what} [{n.setting}] at {n.location} ({n.hint})" for n in missing))
    g = _group(cfg)
    flat = _flat_raw(preset.raw)
    files = []
    with tempfile.TemporaryDirectory(prefix="ovseg_bundle_") as tmp:
        root = Path(tmp)
        (root / "weights").mkdir()
        for n in needs:
            assert n.path is not None
            if n.kind == "released":
                if n.path.suffix == ".safetensors" and manifest_path(n.path).is_file():
                    check = verify_weights(n.path)
                    if not check.ok:
                        raise WeightsToolError(f"{n.path}: " + "; ".join(check.problems))
                    rel = Path("weights") / n.path.name
                    shutil.copy2(n.path, root / rel)
                    shutil.copy2(manifest_path(n.path), root / manifest_path(rel))
                else:
                    rel = Path("weights") / (n.path.stem + ".safetensors")
                    say(f"converting {n.path} -> {rel}")
                    convert(n.path, root / rel, g, cfg, trust_pickle=trust_pickle, say=say)
                files.append((rel, n, manifest_path(rel)))
                flat[n.setting] = str(rel)
            else:
                sub = "clip" if n.kind == "open_clip" or n.setting.endswith(".clip_checkpoint") \
                    else "vfm"
                name = n.what.replace(" / ", ".").replace(" ", "_").replace("/", "_") \
                    if n.kind != "file" else n.path.name
                rel = Path("weights") / sub / (name + n.path.suffix if n.kind != "file" else name)
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                say(f"adding {n.what} ({n.path}) as {rel}")
                shutil.copy2(n.path, root / rel)
                files.append((rel, n, None))
                target_key = {"open_clip": f"{g}.clip_checkpoint",
                              "timm": f"{g}.vfm_checkpoint"}.get(n.kind, n.setting)
                flat[target_key] = str(rel)
        flat["weights_dir"] = ""
        _write_bundle_config(root / BUNDLE_CONFIG, flat)
        make_config(root / BUNDLE_CONFIG)   # the bundle's config must be valid as written
        entries = []
        for rel, n, mrel in files:
            entries.append({"path": str(rel), "kind": n.kind, "setting": n.setting,
                            "what": n.what, "source": n.source,
                            "sha256": sha256_of(root / rel), "size": (root / rel).stat().st_size})
            if mrel is not None:
                entries.append({"path": str(mrel), "kind": "manifest", "setting": n.setting,
                                "what": f"manifest of {rel.name}",
                                "source": "ovseg-weights convert",
                                "sha256": sha256_of(root / mrel),
                                "size": (root / mrel).stat().st_size})
        bundle = {"format": BUNDLE_FORMAT, "preset": preset.name, "source": preset.source,
                  "engine": g, "config": BUNDLE_CONFIG, "files": entries,
                  "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        (root / BUNDLE_MANIFEST).write_text(json.dumps(bundle, indent=2) + "\n")
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(out.name + ".part")
        with tarfile.open(part, "w") as tar:   # weights do not compress: plain tar
            tar.add(root / BUNDLE_MANIFEST, arcname=BUNDLE_MANIFEST)
            tar.add(root / BUNDLE_CONFIG, arcname=BUNDLE_CONFIG)
            for e in entries:
                tar.add(root / e["path"], arcname=e["path"])
        part.replace(out)
    return bundle


def unpack(archive: Path, dest: Path) -> Tuple[Path, List[FileCheck]]:
    """Extract a bundle (regular files only, no path outside ``dest``), verify every file,
    and point its config's weights_dir at ``dest``. Returns (config path, checks)."""
    archive, dest = Path(archive), Path(os.path.expanduser(str(dest))).resolve()
    try:
        tar = tarfile.open(archive, "r")
    except (OSError, tarfile.TarError) as exc:
        raise WeightsToolError(f"{archive} is not a readable tar file: {exc}") from exc
    with tar:
        names = tar.getnames()
        if BUNDLE_MANIFEST not in names:
            raise WeightsToolError(f"{archive} is not a weights bundle (no {BUNDLE_MANIFEST})")
        dest.mkdir(parents=True, exist_ok=True)
        tar.extractall(dest, filter="data")   # refuses links out, absolute paths, devices
    cfg_path = dest / BUNDLE_CONFIG
    raw = read_config_file(cfg_path)
    flat = _flat_raw(raw)
    flat["weights_dir"] = str(dest)
    _write_bundle_config(cfg_path, flat)
    return cfg_path, verify_bundle(dest)


__all__ = ["Release", "RELEASES", "Need", "Preset", "WeightsToolError", "hf_hub_cache",
           "offline_reason", "list_presets", "resolve_preset", "requirements", "fetch",
           "fetch_need", "read_released", "pickle_globals", "convert", "verify",
           "verify_weights", "verify_bundle", "pack", "unpack", "sha256_of", "manifest_path",
           "TINY_MODEL_PREFIXES"]
