"""Input normalisation with the references' arithmetic.

The references (detectron2 meta-architectures) normalise the uint8 values k as
``(k - mean) / std`` with mean and std on the 0..255 scale, in float32. The image
graphs here take [0, 1] input (k / 255); ``(k / 255) * 255`` gives k back exactly in
float32 for every k in 0..255, so multiplying back reproduces the reference bit for
bit. The algebraically equal ``(x - mean / 255) / (std / 255)`` rounds differently (up
to 1 ulp), and thresholded stages downstream (OVSeg's binarised mask crops) turn that
into changed labels.
"""
from __future__ import annotations

import torch


def normalise_unit_image(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
                         ) -> torch.Tensor:
    """Images in [0, 1] (k / 255 for uint8 values k) -> (k - mean) / std with mean and std on
    the 0..255 scale: the reference's arithmetic, bit for bit.

    The reference normalises the 0..255 values. ``(x - mean / 255) / (std / 255)`` is the
    same formula but rounds differently (up to 1 ulp); OVSeg's binarised mask crops turn
    that into several % of changed labels on some photos. ``(k / 255) * 255`` gives ``k``
    back exactly in float32 for every k in 0..255, so the graph keeps its [0, 1] input."""
    return (images * 255.0 - mean) / std


__all__ = ["normalise_unit_image"]
