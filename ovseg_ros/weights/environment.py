"""The process environment weights depend on: the huggingface_hub cache, whether the Hub
is reachable, and offline mode for weights bundles.

``offline_if_bundle`` changes process-wide state (an environment variable and
huggingface_hub's constants), so only entry points call it (``load_segmenter``, which
the node, the API and the command-line tools go through), never a model constructor.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Dict, Optional
from urllib.parse import urlparse

log = logging.getLogger(__name__)

#: file at the root of a weights bundle (``ovseg-weights pack``; docs/weights.md)
BUNDLE_MANIFEST = "ovseg_bundle.json"
PROBE_TIMEOUT_S = 3.0


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


def is_bundle(weights_dir: str) -> bool:
    """True when ``weights_dir`` is an unpacked weights bundle."""
    return bool(weights_dir) and (Path(os.path.expanduser(weights_dir)) / BUNDLE_MANIFEST).is_file()


def offline_if_bundle(weights_dir: str) -> bool:
    """With ``weights_dir`` holding a bundle, switch huggingface_hub to offline mode.

    A bundle carries every file its preset needs, so nothing may reach for the
    network (an air-gapped robot would otherwise wait on connection timeouts).
    huggingface_hub reads HF_HUB_OFFLINE once, at import, so an imported module
    is switched too. Returns whether the bundle was found.
    """
    if not is_bundle(weights_dir):
        return False
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        log.info("weights_dir %s is a weights bundle: HF_HUB_OFFLINE=1", weights_dir)
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    return True


__all__ = ["BUNDLE_MANIFEST", "PROBE_TIMEOUT_S", "hf_hub_cache", "offline_reason", "is_bundle",
           "offline_if_bundle"]
