"""Seeded window cosines on a feature grid, for the tests and the post-processing benchmark.

Two kinds, because the candidate bounds of ``core/bounded_labels.py`` prune according to how
the synonyms' fields relate:

* ``random``: every grid cell's feature independent (smoothed over 3 x 3 cells), so each
  synonym's field is an independent random field: the bounds' worst case, nothing shared;
* ``scene``: the grid cut into regions (nearest of a few seeded centres), each region's
  features near one synonym's text vector, plus a direction every feature shares and
  per-cell noise: what segmentation looks like, a few synonyms winning each region.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("random", "scene")


def grid_cosines(kind: str, text: torch.Tensor, rows: int, cols: int, gen: torch.Generator,
                 *, regions: int = 8, mix: float = 0.4, shared: float = 0.3) -> torch.Tensor:
    """S x rows x cols cosines of L2-normalised grid features with the S unit ``text`` rows."""
    if kind not in KINDS:
        raise ValueError(f"cosine kind {kind!r} is not one of {KINDS}")
    s, dim = text.shape
    noise = torch.randn(dim, rows, cols, generator=gen)
    if kind == "random":
        feats = noise
    else:
        cy = torch.rand(regions, generator=gen) * rows
        cx = torch.rand(regions, generator=gen) * cols
        yy, xx = torch.meshgrid(torch.arange(rows).float(), torch.arange(cols).float(),
                                indexing="ij")
        region = ((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2).argmin(0)
        owner = torch.randint(0, s, (regions,), generator=gen)
        common = F.normalize(torch.randn(dim, generator=gen), dim=0)
        feats = mix * text[owner[region]].permute(2, 0, 1) + shared * common[:, None, None] \
            + noise / dim ** 0.5
    feats = F.avg_pool2d(feats[None], 3, stride=1, padding=1, count_include_pad=False)[0]
    return torch.einsum("ehw,se->shw", F.normalize(feats, dim=0), text)


def unit_rows(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """n seeded L2-normalised rows (stand-ins for text embeddings)."""
    return F.normalize(torch.randn(n, dim, generator=gen), dim=-1)


__all__ = ["KINDS", "grid_cosines", "unit_rows"]
