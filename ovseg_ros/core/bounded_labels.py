"""Labels over many synonyms, computed exactly but only where a synonym can win.

The frame logits of synonym ``s`` are ``Z_s = Ay @ M_s @ Ax.T`` (``core/window_stitch.py``):
every output pixel is a weighted sum of a few grid values (its *support*). For one tile of
output pixels (rows Y, columns X) the support is the rows J of ``Ay[Y]`` and the columns K
of ``Ax[X]`` that hold a non-zero weight, and the value of any pixel of the tile lies in a
range that the grid values alone give: with ``m`` the grid values on J x K, centre
``c = (max m + min m) / 2`` and radius ``r = (max m - min m) / 2``,

    z(p) = sum_jk w_jk(p) m_jk = c * S(p) + sum_jk w_jk(p) (m_jk - c)
    c * S(p) - r * A(p)  <=  z(p)  <=  c * S(p) + r * A(p)

with ``S(p)`` the sum and ``A(p)`` the sum of absolute values of the pixel's weights
(``S = A = 1`` for bilinear weights: the value lies between the support's minimum and
maximum; negative weights such as bicubic ones widen the range by ``A``). Over the tile,
``S`` and ``A`` range between per-tile constants (products of the per-axis sums, since the
weights are separable). The same bound holds for any linear mix of synonym fields, and
``TilePlan.band_candidates`` applies it to the differences ``z_s - ref`` with reference
synonyms: where a difference stays below zero on the whole tile, ``s`` is below the
maximum at every pixel of the tile, so it is never the argmax there; only the others (the
*candidates*) are interpolated on the tile.

Exactness: a tile's values are the full operator's two products sliced to the tile's
rows and columns, over the full inner dimensions (``TilePlan.tile_logits``). Whether the
matrix-product kernels then give every element bit for bit as in the full product depends
on the shapes (the order of accumulation is the kernel's), not on the values, so each plan
checks it once on seeded values for every tile and several candidate counts
(``tile_products_match``, ``TilePlan.exact``); where it fails (on this machine: a few odd
tile widths, a 3 x 4 grid) ``bounded_argmax`` refuses and the engine takes the full argmax.
The argmax over the candidates, ascending in synonym order, takes the first maximum like
``torch.max`` over all synonyms, so labels and the per-pixel maximum are bit-identical to
the full path's, ties included. The bounds are widened by a margin far above the float32
rounding of the products (``MARGIN``), so rounding never drops the winner; it only keeps a
few extra candidates.

The confidence (the probability of the chosen synonym, a softmax over every synonym) is
``1 / sum_s exp(z_s - z_max)``: every synonym at every pixel, a floor no bound removes
(a term is negligible only ~24 logit units below the maximum). ``confidence_from_max``
computes it in one pass per synonym chunk from the exact maximum, instead of the running
maximum and rescaled sum of ``SoftmaxArgmax``; with the labels' tile work before it, that
measured 0.7-1.1x the streamed pass, so the engine takes the streamed pass whenever the
confidence is wanted and this module only when it is not (``scripts/measure_postprocess.py``
compares both).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from .window_stitch import WindowStitch

#: relative widening of every bound (of A * max|m|): float32 products of a few dozen
#: terms round by ~1e-6 relative at most; 2^-16 keeps a wide safety factor and costs
#: only candidates whose bound is within that of the best lower bound
MARGIN = 2.0 ** -16
#: fewer synonyms than this: the full argmax (a few dozen full-size products) is cheaper
#: than the tile work (300 tiles of small operations at 640 x 480); measured in
#: docs/benchmarks/cpu.md, where 28 synonyms cost 0.7-2x the full argmax
MIN_SYNONYMS = 64
#: output pixels per tile side: bounds tighten with smaller tiles, the per-tile work
#: (a few small products) costs more with more tiles; of 16 / 32 / 64, 32 was the fastest
#: on scene cosines at 150 and 847 classes (640 x 480; a loaded host, exploratory runs)
DEFAULT_TILE = 32


@dataclass(frozen=True)
class Tile:
    ys: slice                     # output rows
    xs: slice                     # output columns
    band: int                     # index of its row band (tiles of one band share ``rows``)
    cols: torch.Tensor            # support columns K of the block matrix
    ay: torch.Tensor              # |Y| x (R gh): the operator's rows of the tile
    axt: torch.Tensor             # (C gw) x |X|: the operator's columns of the tile


class TilePlan:
    """The tiles of one stitch operator's output, their supports and bound constants."""

    def __init__(self, stitch: WindowStitch, tile: int = DEFAULT_TILE):
        if tile < 1:
            raise ValueError(f"tile must be >= 1 output pixel, got {tile}")
        ay, axt = stitch.ay, stitch.ax_t                  # H x RJ, CK x W
        h, w = ay.shape[0], axt.shape[1]
        width = axt.shape[0]                              # C gw: columns of the block matrix
        self.size = (h, w)
        self.tile = tile
        self.band_rows: List[torch.Tensor] = []           # support rows J per band
        self.band_points: List[torch.Tensor] = []         # (J Kmax) x nT grid points
        self.band_tiles: List[List[int]] = []             # tile indices per band
        self.tiles: List[Tile] = []
        lo, hi, spread = [], [], []
        for bi, y0 in enumerate(range(0, h, tile)):
            ys = slice(y0, min(h, y0 + tile))
            rows = (ay[ys] != 0).any(0).nonzero().squeeze(1)
            self.band_rows.append(rows)
            ay_t = ay[ys].index_select(1, rows).contiguous()
            sy = ay_t.sum(1)
            ay_abs = ay_t.abs().sum(1).max()
            first = len(self.tiles)
            for x0 in range(0, w, tile):
                xs = slice(x0, min(w, x0 + tile))
                cols = (axt[:, xs] != 0).any(1).nonzero().squeeze(1)
                axt_t = axt[:, xs].index_select(0, cols).contiguous()
                sx = axt_t.sum(0)
                corners = torch.stack([sy.min() * sx.min(), sy.min() * sx.max(),
                                       sy.max() * sx.min(), sy.max() * sx.max()])
                lo.append(corners.min())
                hi.append(corners.max())
                spread.append(ay_abs * axt_t.abs().sum(0).max())
                self.tiles.append(Tile(ys, xs, bi, cols, ay[ys].contiguous(),
                                       axt[:, xs].contiguous()))
            members = self.tiles[first:]
            self.band_tiles.append(list(range(first, len(self.tiles))))
            # every tile's support points (flat index j * width + k into the block matrix),
            # padded to one count by repeating the last: maxima and minima ignore a repeat
            # (it only tilts the choice of a reference synonym, and any is a valid one)
            kmax = max(len(t.cols) for t in members)
            cols = torch.stack([torch.cat([t.cols, t.cols[-1:].expand(kmax - len(t.cols))])
                                for t in members], 1)                      # Kmax x nT
            points = rows[:, None, None] * width + cols[None]               # J x Kmax x nT
            self.band_points.append(points.flatten(0, 1))
        self.s_lo = torch.stack(lo).to(ay.dtype)          # T: min over the tile of S(p)
        self.s_hi = torch.stack(hi).to(ay.dtype)          # T: max of S(p)
        self.spread = torch.stack(spread).to(ay.dtype)    # T: max of A(p)
        self.exact = True
        self.exact = tile_products_match(stitch, self)

    @staticmethod
    def tile_logits(blocks: torch.Tensor, t: Tile) -> torch.Tensor:
        """n x |Y| x |X| logits of the tile for these synonyms' block matrices: the full
        operator's two products sliced to the tile's rows and columns, over the full inner
        dimensions (the operator's own sums, term for term; a sum over the support alone
        skips exact zeros but can change the kernel's order of accumulation)."""
        return torch.matmul(t.ay, torch.matmul(blocks, t.axt))

    def band_candidates(self, points_major: torch.Tensor, band: int) -> torch.Tensor:
        """nT x S bool for the tiles of ``band``: the synonyms that may reach the maximum
        somewhere on the tile. ``points_major``: the block matrices as (R gh C gw) x S.

        Per tile two reference synonyms are taken, ``a`` (the largest sum over the
        support) and ``b`` (the one that exceeds ``a`` most somewhere on it: on a tile
        across a boundary, the class of the other side), and every synonym's difference
        to ``ref = l * m_a + (1 - l) * m_b`` for l in {1, 1/2, 0} is bounded as in the
        module docstring. A mix of two fields interpolates to the same mix of their
        values, which is at most their maximum, so where the upper bound of
        ``z_s - ref`` is negative for one l, ``z_s`` lies below the maximum at every
        pixel of the tile and ``s`` is never the (first) maximum. Differences cancel what
        the synonyms share (the swing of the image features), so this is much tighter than
        comparing each synonym's own range with the best lower bound. The reductions run
        over the first axis (the support points): contiguous synonyms vectorise."""
        sub = points_major[self.band_points[band]]            # P x nT x S
        tiles = torch.arange(sub.shape[1], device=sub.device)
        m_a = sub[:, tiles, sub.sum(0).argmax(1)]             # P x nT
        diff = sub - m_a[..., None]
        dmax, dmin = diff.amax(0), diff.amin(0)               # nT x S
        del diff
        m_b = sub[:, tiles, dmax.argmax(1)]
        members = torch.tensor(self.band_tiles[band], device=sub.device)
        consts = (self.s_lo[members, None], self.s_hi[members, None],
                  self.spread[members, None])
        # |m_s| + |ref| <= max|d| + 2 max(|m_a|, |m_b|): what the rounding scales with
        size = torch.maximum(dmax.abs(), dmin.abs()) \
            + 2 * torch.maximum(m_a.abs(), m_b.abs()).amax(0)[:, None]      # nT x S
        keep = ~_upper_below(dmax, dmin, size, *consts)
        # the two other references only for what the first one keeps (a few per cent)
        t_idx, s_idx = keep.nonzero(as_tuple=True)
        if t_idx.numel():
            rest = sub[:, t_idx, s_idx]                                      # P x n
            lo, hi, spread = (c[t_idx, 0] for c in consts)
            below = torch.zeros(t_idx.numel(), dtype=torch.bool, device=sub.device)
            for ref in ((m_a + m_b) * 0.5, m_b):
                d = rest - ref[:, t_idx]
                below |= _upper_below(d.amax(0), d.amin(0), size[t_idx, s_idx], lo, hi,
                                      spread)
            keep[t_idx, s_idx] = ~below
        return keep


def _upper_below(dmax: torch.Tensor, dmin: torch.Tensor, size: torch.Tensor, lo: torch.Tensor,
                 hi: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """Whether a difference field with these support extremes interpolates below zero at
    every pixel of the tile: its upper bound (module docstring) plus the rounding slack."""
    centre, radius = (dmax + dmin) * 0.5, (dmax - dmin) * 0.5
    upper = torch.maximum(centre * lo, centre * hi) + radius * spread + MARGIN * spread * size
    return upper < 0



@dataclass
class BoundedLabels:
    labels: torch.Tensor          # H x W int64 class ids
    best: torch.Tensor            # H x W float32: the largest scaled logit (bit-exact)
    synonym: torch.Tensor         # H x W int64: the synonym that gave it (first on ties)
    candidates: int               # synonym x tile pairs interpolated
    pairs: int                    # synonym x tile pairs in all (synonyms x tiles)


def tile_plan(stitch: WindowStitch, tile: int = DEFAULT_TILE) -> TilePlan:
    """The operator's plan for ``tile``, built once and kept on the operator."""
    plans: Dict[int, TilePlan] = stitch.plans
    if tile not in plans:
        plans[tile] = TilePlan(stitch, tile)
    return plans[tile]


def first_max(z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(max, index of its first row) over dim 0 of n x ..., as ``z.max(0)`` gives them:
    a plain maximum, then the first row equal to it (the largest of descending row
    weights n..1); several times faster than the indexed reduction on the CPU."""
    best = z.amax(0)
    n = z.shape[0]
    weight = torch.arange(n, 0, -1, dtype=z.dtype, device=z.device)
    hit = (z == best).to(z.dtype).mul_(weight.view(n, *([1] * (z.dim() - 1))))
    return best, n - hit.amax(0).long()


def bounded_argmax(stitch: WindowStitch, blocks: torch.Tensor, synonym_class: torch.Tensor,
                   tile: int = DEFAULT_TILE) -> BoundedLabels:
    """Labels of ``stitch(blocks)`` (S x H x W scaled logits, never formed in full): the class
    of the first synonym with the largest logit at each pixel, as ``SoftmaxArgmax`` over
    every synonym gives it, bit for bit."""
    s = blocks.shape[0]
    sc = torch.as_tensor(synonym_class, dtype=torch.long, device=blocks.device)
    if sc.dim() != 1 or sc.numel() != s:
        raise ValueError(f"synonym_class holds {sc.numel()} entries for {s} synonyms")
    plan = tile_plan(stitch, tile)
    if not plan.exact:
        raise ValueError("this machine's matrix products do not give a tile's logits bit for "
                         "bit equal to the full operator's for this layout (plan.exact); "
                         "use the full argmax")
    h, w = plan.size
    best = torch.empty((h, w), dtype=blocks.dtype, device=blocks.device)
    arg = torch.empty((h, w), dtype=torch.long, device=blocks.device)
    kept = 0
    points_major = blocks.flatten(1).t().contiguous()  # (R gh C gw) x S
    for bi in range(len(plan.band_rows)):
        keep = plan.band_candidates(points_major, bi)  # nT x S
        kept += int(keep.sum())
        for ti, k in zip(plan.band_tiles[bi], keep):
            t = plan.tiles[ti]
            idx = k.nonzero().squeeze(1)               # ascending synonym order
            z = plan.tile_logits(blocks.index_select(0, idx), t)
            best[t.ys, t.xs], pos = first_max(z)
            arg[t.ys, t.xs] = idx[pos]
    return BoundedLabels(sc[arg], best, arg, kept, s * len(plan.tiles))


def confidence_from_max(stitch: WindowStitch, blocks: torch.Tensor, best: torch.Tensor,
                        chunk: int) -> torch.Tensor:
    """H x W probability of the chosen synonym, ``1 / sum_s exp(z_s - best)``, over every
    synonym in chunks of ``chunk`` (the floor: all synonyms at every pixel). ``best`` must
    be the exact per-pixel maximum (``bounded_argmax``), so every term is at most 1 and one
    pass per chunk suffices (no running maximum, no rescaling)."""
    total: Optional[torch.Tensor] = None
    for s0 in range(0, blocks.shape[0], chunk):
        part = stitch(blocks[s0:s0 + chunk]).sub_(best).exp_().sum(0)
        total = part if total is None else total.add_(part)
    return total.reciprocal_()


def tile_products_match(stitch: WindowStitch, plan: TilePlan, seed: int = 0) -> bool:
    """Whether this machine's matrix products give every tile's logits bit for bit equal to
    the full operator's (the premise of ``bounded_argmax``), for candidate sets of several
    sizes, on seeded values: the products' kernels depend on the shapes, not the values."""
    gen = torch.Generator().manual_seed(seed)
    rows, cols = stitch.ay.shape[1], stitch.ax_t.shape[0]
    blocks = torch.randn((13, rows, cols), generator=gen).to(stitch.ay.device)
    full = stitch(blocks)                   # at the caller's threads, as the tiles run
    picks = [torch.tensor(p, device=blocks.device)
             for p in ([12], [1, 4], [0, 2, 3, 7, 11], list(range(1, 10)))]
    for t in plan.tiles:
        for idx in picks:
            z = plan.tile_logits(blocks.index_select(0, idx), t)
            if not torch.equal(z, full.index_select(0, idx)[:, t.ys, t.xs]):
                return False
    return True


__all__ = ["MARGIN", "MIN_SYNONYMS", "DEFAULT_TILE", "TilePlan", "BoundedLabels",
           "tile_plan", "bounded_argmax", "first_max", "confidence_from_max",
           "tile_products_match"]
