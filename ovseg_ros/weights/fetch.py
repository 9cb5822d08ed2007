"""Bringing missing weights: through huggingface_hub (its cache, its progress bars) or
from the published location; offline it fails at once with what is missing and how to
bring it."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, List, Optional

from ..config import Config
from .environment import hf_hub_cache, offline_reason
from .errors import WeightsToolError
from .needs import Need, requirements


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


__all__ = ["fetch", "fetch_need"]
