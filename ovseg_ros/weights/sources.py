"""What an engine declares about its weight files, as plain data.

An engine class states, without reading anything (docs/architecture.md, "Engines
declare their weights"):

* ``releases``: the checkpoints its authors publish (``Release``: file name, download
  page, the checksum facts given);
* ``weights_needs(cfg)``: the files a config makes it read, each named by the settings
  that choose it: an open_clip model (``OpenClipWeights``), a timm model
  (``TimmWeights``), the engine's own checkpoint file (``CheckpointFile``).

The weights tool (``needs.py``, ``fetch``, ``pack``) turns each declaration into what is
on disk and where it is published; it never guesses from setting names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

_DRIVE = "https://drive.google.com/file/d/{}/view"
_DRIVE_DOWNLOAD = "https://drive.usercontent.google.com/download?id={}&export=download&confirm=t"


@dataclass(frozen=True)
class Release:
    """One published checkpoint, as its authors publish it (a Google Drive file)."""

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


@dataclass(frozen=True)
class OpenClipWeights:
    """An open_clip model's weights: a pretrained tag, or a local file that replaces it."""

    model: str          # setting naming the open_clip model
    pretrained: str     # setting naming its pretrained tag
    checkpoint: str     # setting naming a local file (wins over the tag when set)


@dataclass(frozen=True)
class TimmWeights:
    """A timm model's weights: the pretrained tag in its name, or a local file."""

    model: str          # setting naming the timm model (with its tag)
    checkpoint: str     # setting naming a local file (wins when set)


@dataclass(frozen=True)
class CheckpointFile:
    """The engine's own checkpoint, named by one setting; one of the engine's
    ``releases`` when its file name matches one."""

    setting: str


WeightsNeed = Union[OpenClipWeights, TimmWeights, CheckpointFile]


__all__ = ["Release", "OpenClipWeights", "TimmWeights", "CheckpointFile", "WeightsNeed"]
