"""Released checkpoints, as their authors publish them, and which one a config names.

Sizes and SHA-256 are not published for any of them ("unknown"); OVSeg's page gives
the first six hex digits of the MD5 only. Download pages: Google Drive links of each
project's README.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from ..config import Config

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


def release_for(cfg: Config, g: str) -> Optional[Release]:
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


__all__ = ["Release", "RELEASES", "release_for"]
