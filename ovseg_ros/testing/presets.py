"""The tiny random-weight presets, in one place: tests (test/node_harness.py, and the
YAML copies test/configs/tiny_proxyclip.yaml and config/demo_tiny.yaml, which
test/core/test_architecture.py keeps equal to these), the demo and the benchmark.

Flat config keys as ``load_segmenter`` takes them. Importing this module loads
nothing heavy; the models themselves are registered on demand by name
(``ovseg_ros.weights.register_tiny_models_if_named``).
"""
from __future__ import annotations

from typing import Any, Dict

#: ProxyCLIP with the tiny ViT CLIP and the tiny DINO-like VFM, 112 px windows
TINY_PROXYCLIP: Dict[str, Any] = {
    "engine": "proxyclip", "random_init": True,
    "proxyclip.clip_model": "ovseg-tiny-ViT", "proxyclip.vfm_model": "ovseg_tiny_vit_patch8",
    "proxyclip.short_side": 112, "proxyclip.crop_size": 112, "proxyclip.stride": 56,
}

#: FC-CLIP with the tiny ConvNeXt CLIP and the full-width head, 20 queries
TINY_FCCLIP: Dict[str, Any] = {
    "engine": "fcclip", "random_init": True, "fcclip.clip_model": "ovseg-tiny-ConvNeXt",
    "fcclip.short_side": 128, "fcclip.max_size": 256, "fcclip.num_queries": 20,
}

#: OVSeg with the tiny Swin, tiny MaskFormer head and tiny mask-adapted CLIP (224 crops),
#: 20 proposals (test/configs/tiny_ovseg.yaml uses 8)
TINY_OVSEG: Dict[str, Any] = {
    "engine": "ovseg", "random_init": True, "ovseg.swin_model": "ovseg_tiny_swin",
    "ovseg.head_size": "tiny", "ovseg.clip_model": "ovseg-tiny-ViT-14",
    "ovseg.short_side": 128, "ovseg.max_size": 256, "ovseg.num_queries": 20,
}

__all__ = ["TINY_PROXYCLIP", "TINY_FCCLIP", "TINY_OVSEG"]
