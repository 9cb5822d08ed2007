"""Window logits -> frame logits as two small matrix products per synonym.

Sliding-window inference produces, per window, cosine logits on the feature grid
(h x w, e.g. 21 x 21 for a 336-pixel window at patch 16). The frame logits are
what this chain of linear steps gives, per synonym:

    bilinear upsampling of each window to its padded size, crop of the padding,
    sum of the overlapping windows on the resized frame, division by the window
    count, bilinear resize to the input size

Every step acts on rows and columns separately (bilinear = linear along y, then
x; the windows form a grid of rows x columns, so the count is a product
cy(y) * cx(x)). The whole chain is therefore ``Z = Ay @ M @ Ax.T`` with

* ``M`` the (R * h) x (C * w) block matrix of the window grids (block (r, c) =
  the window in row r, column c),
* ``Ay`` (H x R * h) and ``Ax`` (W x C * w) the per-axis maps of the chain,
  built once per frame layout by running the same torch interpolation on
  identity matrices, so they hold exactly the interpolation weights torch uses.

That is ~2 * H * (R h) * W flops per synonym (13 MFLOP at 640 x 480, 2 windows)
written once, against five full-size passes of the step-by-step chain (upsample,
zero, add, divide, resize); docs/benchmarks/cpu.md has the measurements.
The products round differently from the steps: the logits agree to a few float32
ulps (tested), so labels can differ only where the top two synonyms are that
close, the same class of difference as a change of chunk size in the steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

Window = Tuple[int, int, int, int]            # y1, y2, x1, x2 on the resized frame


def interpolation_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """n_out x n_in: torch's 1-D linear interpolation (align_corners=False) as a matrix.

    Bilinear 2-D interpolation uses the same per-axis source indices and weights,
    so it equals applying this along y and along x."""
    if n_in == n_out:
        return torch.eye(n_in)
    eye = torch.eye(n_in).unsqueeze(0)          # 1 x n_in channels x n_in samples
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].t().contiguous()


def _axis_map(grid: int, padded: int, pad_before: int, length: int, starts: Sequence[int],
              canvas: int, out: int) -> torch.Tensor:
    """out x (len(starts) * grid): grid -> padded window -> crop -> placed and averaged on the
    canvas -> resized to ``out``, for each window start along one axis."""
    up = interpolation_matrix(grid, padded)[pad_before:pad_before + length]   # length x grid
    count = torch.zeros(canvas)
    for s in starts:
        count[s:s + length] += 1
    if bool((count == 0).any()):
        raise ValueError("the windows do not cover the frame")
    resize = interpolation_matrix(canvas, out)                                # out x canvas
    blocks = []
    for s in starts:
        placed = torch.zeros(canvas, grid)
        placed[s:s + length] = up / count[s:s + length, None]
        blocks.append(resize @ placed)
    return torch.cat(blocks, 1)


@dataclass(frozen=True)
class Layout:
    """Everything the chain depends on; equal layouts share one operator."""
    grid: Tuple[int, int]             # feature grid h, w of one window
    padded: Tuple[int, int]           # padded window size the grid covers
    pad_top_left: Tuple[int, int]     # padding above and left of the window content
    windows: Tuple[Window, ...]       # on the resized frame, a full rows x columns grid
    resized: Tuple[int, int]          # frame size the windows tile
    size: Tuple[int, int]             # output size (the input image)


class WindowStitch:
    """``Z = scale * Ay @ M @ Ax.T`` for chunks of synonyms; see the module docstring."""

    def __init__(self, layout: Layout, scale: float = 1.0, device="cpu"):
        windows = list(layout.windows)
        ys = sorted({(w[0], w[1]) for w in windows})
        xs = sorted({(w[2], w[3]) for w in windows})
        if len(ys) * len(xs) != len(windows) or len(set(windows)) != len(windows):
            raise ValueError(f"windows {windows} are not a full grid of rows x columns")
        heights = {y2 - y1 for y1, y2 in ys}
        widths = {x2 - x1 for x1, x2 in xs}
        if len(heights) != 1 or len(widths) != 1:
            raise ValueError("all windows must have the same size")
        (gh, gw), (ph, pw), (top, left) = layout.grid, layout.padded, layout.pad_top_left
        (rh, rw), (h0, w0) = layout.resized, layout.size
        ay = _axis_map(gh, ph, top, heights.pop(), [y1 for y1, _ in ys], rh, h0)
        ax = _axis_map(gw, pw, left, widths.pop(), [x1 for x1, _ in xs], rw, w0)
        self.layout = layout
        self.rows, self.cols = len(ys), len(xs)
        # window k of the engine's order sits at block (row_of[k], col_of[k]) of M
        self._row_of = [ys.index((w[0], w[1])) for w in windows]
        self._col_of = [xs.index((w[2], w[3])) for w in windows]
        self.ay = (ay * float(scale)).to(device)          # H x R*gh, the scale folded in
        self.ax_t = ax.t().contiguous().to(device)        # C*gw x W
        self._np = None                                    # CPU copies for segment_means
        self.plans: dict = {}        # tile plans of core/bounded_labels.py, by tile size

    def block_matrix(self, low: torch.Tensor) -> torch.Tensor:
        """n_windows x S x gh x gw window logits -> S x (R gh) x (C gw)."""
        n, s, gh, gw = low.shape
        if n != len(self._row_of) or (gh, gw) != self.layout.grid:
            raise ValueError(f"window logits {tuple(low.shape)} do not match the layout "
                             f"({len(self._row_of)} windows of {self.layout.grid})")
        m = low.new_empty((s, self.rows * gh, self.cols * gw))
        for k, (r, c) in enumerate(zip(self._row_of, self._col_of)):
            m[:, r * gh:(r + 1) * gh, c * gw:(c + 1) * gw] = low[k]
        return m

    def __call__(self, blocks: torch.Tensor) -> torch.Tensor:
        """S x (R gh) x (C gw) block matrices (``block_matrix``) -> S x H x W logits."""
        return torch.matmul(self.ay, torch.matmul(blocks, self.ax_t))


    def segment_means(self, blocks: torch.Tensor, panoptic, segments) -> torch.Tensor:
        """E x (R gh) x (C gw) block features -> N x E: the mean of the stitched (frame-size)
        features over each segment's pixels, without forming the E x H x W volume.

        The stitch is linear, so the mean over a mask is ``<Ay.T @ mask @ Ax, M_e> / area``
        per channel; ``Ay.T @ mask @ Ax`` is formed on the segment's bounding box only, in
        numpy on the CPU (where the masks are): these are many tiny products, which a
        multi-threaded torch runtime makes wait on its thread barriers (100x slower on a
        loaded 2-core machine, docs/benchmarks/tracking.md). One product on the features'
        device follows. ``scale`` is folded into ``ay``: the result carries it (callers
        normalise)."""
        if self._np is None:
            self._np = (self.ay.cpu().numpy(), self.ax_t.t().contiguous().cpu().numpy())
        ay, ax = self._np
        weights = np.empty((len(segments), ay.shape[1] * ax.shape[1]), np.float32)
        for i, seg in enumerate(segments):
            x, y, w, h = seg.bbox
            mask = (panoptic[y:y + h, x:x + w] == seg.id).astype(np.float32)
            pooled = ay[y:y + h].T @ (mask @ ax[x:x + w])
            weights[i] = pooled.ravel() / max(int(seg.area), 1)
        if not len(segments):
            return blocks.new_zeros((0, blocks.shape[0]))
        return torch.from_numpy(weights).to(blocks.device, blocks.dtype) @ blocks.flatten(1).t()


class StitchCache:
    """A few operators by layout: frames of one camera share one."""

    def __init__(self, entries: int = 8):
        self._entries = entries
        self._ops: List[Tuple[Tuple, WindowStitch]] = []

    def get(self, layout: Layout, scale: float, device) -> WindowStitch:
        key = (layout, float(scale), str(device))
        for k, op in self._ops:
            if k == key:
                return op
        op = WindowStitch(layout, scale, device)
        self._ops = ([(key, op)] + self._ops)[:self._entries]
        return op


__all__ = ["Layout", "WindowStitch", "StitchCache", "interpolation_matrix"]
