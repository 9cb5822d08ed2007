"""Per-pixel class decision over many classes without the C x H x W volume.

The node publishes the label image and the probability of the chosen class; the
full class-probability volume is needed only when a caller asks for it
(``scores=True``). So the engines feed their upsampled logits to the helpers
here in *class chunks* and keep only H x W running state:

* ``SoftmaxArgmax`` (dense engines: ProxyCLIP): a softmax over synonyms, each
  class taking its best synonym. The label is the class of the synonym with the
  largest scaled logit (the softmax is monotone, so this is the argmax of the
  class probabilities), the confidence is that synonym's probability
  ``1 / sum_s exp(z_s - z_max)``, accumulated as a running maximum with a
  rescaled running sum (the streaming log-sum-exp).
* ``mask_semantic`` (mask-classification engines: FC-CLIP, MAFT+, OVSeg):
  ``score_c(p) = sum_q P(c | q) * sigmoid(mask_q(p))`` normalised over classes.
  The normaliser is ``sum_q (sum_c P(c | q)) * mask_q(p)``, which needs no class
  volume; the label is the argmax of the unnormalised score (division by a
  per-pixel positive constant keeps the order).

Exactness: bilinear upsampling, window stitching and the einsum with the class
rows act on every class separately, so computing them chunk by chunk gives the
same numbers per class as one call over all classes up to the last bit: torch's
CPU bilinear kernel vectorises across planes, so the float32 result of one plane
depends on its position in the tensor (identical planes at other positions differ
by an ulp), hence labels can depend on the chunk size at near-ties (top-2 gaps of
~1e-6 in the scaled logits) and nowhere else. The argmax takes the first
maximum on ties, across chunks as well (``>`` against the running best), like
``torch.max`` over the whole volume. Only the softmax denominator is summed in
another order, so confidences agree with the full computation to rounding.

The budget is the number of float32 values one chunk may hold
(``class_chunk``); memory then stays a few chunk-sized buffers whatever the
number of classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch

#: values (float32) one class chunk may hold: 8 Mi values = 32 MiB
DEFAULT_BUDGET = 1 << 23


def class_chunk(num_classes: int, pixels: int, budget: int = DEFAULT_BUDGET) -> int:
    """How many classes (or synonyms) of ``pixels`` values each fit in ``budget``; >= 1."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return max(1, min(int(num_classes), int(budget) // max(1, int(pixels))))


def fold_argmax(z: torch.Tensor, offset: int, best: Optional[torch.Tensor],
                arg: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fold chunk ``z`` (k x ...) of rows ``offset..offset+k-1`` into a running (max, argmax).

    Returns the chunk's per-pixel maximum and the updated argmax; the caller keeps
    the running maximum. A chunk takes a pixel only where its maximum is strictly
    larger (ties keep the earlier row, like one argmax over all rows). The index
    search runs only on the pixels a chunk takes: after the first chunks those are
    few, and a maximum without indices is much cheaper than one with them.
    """
    if best is None:
        cmax, carg = z.max(dim=0)
        return cmax, carg + offset
    cmax = z.amax(dim=0)
    better = (cmax > best).view(-1)
    pix = better.nonzero().squeeze(1)
    if pix.numel():
        sub = z.reshape(z.shape[0], -1).index_select(1, pix)
        arg.view(-1)[pix] = sub.max(dim=0).indices + offset
    return cmax, arg


def apply_prob_thd(labels: torch.Tensor, confidence: torch.Tensor, thd: float) -> torch.Tensor:
    """``prob_thd``: pixels whose chosen-class probability is below ``thd`` get class 0."""
    if thd <= 0:
        return labels
    return torch.where(confidence < thd, torch.zeros_like(labels), labels)


def class_probabilities(z: torch.Tensor, synonym_class: torch.Tensor,
                        num_classes: int) -> torch.Tensor:
    """The full volume (``scores=True``): S x H x W scaled logits -> K x H x W, softmax over
    synonyms, then each class's best synonym."""
    probs = z.softmax(dim=0)
    s = probs.shape[0]
    if s == num_classes:
        return probs
    idx = synonym_class.to(probs.device).view(s, *([1] * (probs.dim() - 1))).expand_as(probs)
    out = torch.zeros((num_classes,) + tuple(probs.shape[1:]), dtype=probs.dtype,
                      device=probs.device)
    return out.scatter_reduce_(0, idx, probs, reduce="amax", include_self=False)


class SoftmaxArgmax:
    """Streaming softmax argmax over synonym chunks fed in synonym order.

        acc = SoftmaxArgmax(synonym_class, num_classes)
        for z in chunks:          # k x H x W scaled logits (logit_scale * cosine)
            acc.update(z)         # consumes z (overwritten in place)
        labels, confidence = acc.result()

    ``synonym_class`` must be non-decreasing (synonyms grouped by class, as the
    vocabulary parser gives them), so the first maximal synonym belongs to the
    first maximal class, which is what an argmax over the class volume picks.
    """

    def __init__(self, synonym_class: torch.Tensor, num_classes: int):
        sc = torch.as_tensor(synonym_class, dtype=torch.long)
        if sc.dim() != 1 or sc.numel() < 1:
            raise ValueError("synonym_class must be a non-empty 1-D index tensor")
        if bool((sc[1:] < sc[:-1]).any()):
            raise ValueError("synonym_class must be non-decreasing (synonyms grouped by class)")
        if int(sc.max()) >= num_classes or int(sc.min()) < 0:
            raise ValueError(f"synonym_class holds ids outside [0, {num_classes})")
        self.synonym_class = sc
        self.num_synonyms = sc.numel()
        self.num_classes = int(num_classes)
        self.seen = 0
        self._best: Optional[torch.Tensor] = None    # running max of z
        self._arg: Optional[torch.Tensor] = None     # its synonym index
        self._sum: Optional[torch.Tensor] = None     # sum_s exp(z_s - best)

    def update(self, z: torch.Tensor) -> None:
        k = z.shape[0]
        if self.seen + k > self.num_synonyms:
            raise ValueError(f"got {self.seen + k} synonyms of logits for {self.num_synonyms}")
        # strict >: ties keep the earlier synonym
        cmax, self._arg = fold_argmax(z, self.seen, self._best, self._arg)
        if self._best is None:
            self._best = cmax
            self._sum = z.sub_(cmax).exp_().sum(dim=0)
        else:
            new = torch.maximum(self._best, cmax)
            self._sum = self._sum.mul_(torch.exp(self._best - new)) \
                + z.sub_(new).exp_().sum(dim=0)
            self._best = new
        self.seen += k

    def result(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(labels H x W int64 class ids, confidence H x W float32)."""
        if self.seen != self.num_synonyms:
            raise ValueError(f"got logits of {self.seen} synonyms, expected {self.num_synonyms}")
        labels = self.synonym_class.to(self._arg.device)[self._arg]
        return labels, self._sum.reciprocal().float()


def softmax_argmax(chunks, synonym_class: torch.Tensor, num_classes: int, *,
                   scores: bool = False):
    """Run ``SoftmaxArgmax`` over an iterable of scaled-logit chunks.

    Returns (labels, confidence, volume) with ``volume`` the K x H x W class
    probabilities when ``scores`` is true (then the chunks are also kept), else None.
    """
    acc = SoftmaxArgmax(synonym_class, num_classes)
    kept: List[torch.Tensor] = []
    for z in chunks:
        if scores:
            kept.append(z.clone())
        acc.update(z)
    labels, conf = acc.result()
    volume = class_probabilities(torch.cat(kept, 0), synonym_class, num_classes) \
        if scores else None
    return labels, conf, volume


@dataclass
class MaskSemantic:
    labels: torch.Tensor                      # H x W int64 class ids
    confidence: torch.Tensor                  # H x W float32 normalised score of the label
    scores: Optional[torch.Tensor]            # K x H x W normalised scores when asked


def mask_semantic(class_probs: torch.Tensor, query_masks: Callable[[int, int], torch.Tensor],
                  shape: Tuple[int, int], *, scores: bool = False,
                  budget: int = DEFAULT_BUDGET) -> MaskSemantic:
    """Semantic inference of mask-classification models, in class chunks.

    class_probs: Q x K class probabilities per query (void dropped).
    query_masks(i0, i1): the (i1 - i0) x H x W mask probabilities (sigmoid of the
        upsampled mask logits) of queries i0..i1-1; called with chunks of at most
        ``budget`` values, each query range once.
    Returns labels, confidence (the label's score / the sum over classes) and, when
    ``scores`` is true, the K x H x W normalised volume.

    While the class volume fits the budget or is no larger than the query masks
    (K <= Q), it is accumulated over query chunks directly. Beyond, the query masks
    are kept (H x W x Q, fixed in the number of classes) and the scores are formed
    one tile of pixels at a time, every class at once: one matrix product over all
    queries per tile, written once and reduced to the argmax right away (class chunks
    summed query chunk by query chunk re-read each chunk once per query chunk and were
    several times slower at Q = 250, K = 847, 640 x 480). The path and the tiles do not
    depend on ``scores``, so the labels are the same with and without it. Memory:
    max(budget, Q x H x W) plus one tile.
    """
    q, k = class_probs.shape
    h, w = shape
    hw = h * w
    q_chunk = class_chunk(q, hw, budget)
    k_chunk = class_chunk(k, hw, budget)
    ranges = [(i, min(q, i + q_chunk)) for i in range(0, q, q_chunk)]
    weight = class_probs.sum(1)                           # Q: sum over classes per query
    device = class_probs.device
    denom = torch.zeros((h, w), dtype=torch.float32, device=device)
    if k_chunk >= k or k <= q:
        vol = torch.zeros((k, h, w), dtype=torch.float32, device=device)
        for i0, i1 in ranges:
            m = query_masks(i0, i1)
            vol += torch.einsum("qc,qhw->chw", class_probs[i0:i1], m)
            denom += torch.einsum("q,qhw->hw", weight[i0:i1], m)
        best, labels = vol.max(0)
        denom = denom.clamp_min(1e-12)
        out = vol.div_(denom) if scores else None
        return MaskSemantic(labels, (best / denom).float(), out)
    # masks kept pixel-major (HW x Q), so that a tile of pixels is contiguous rows
    masks_t = torch.empty((hw, q), dtype=torch.float32, device=device)
    for i0, i1 in ranges:
        m = query_masks(i0, i1)
        denom += torch.einsum("q,qhw->hw", weight[i0:i1], m)
        masks_t[:, i0:i1] = m.reshape(i1 - i0, hw).t()
    probs = class_probs.float()
    tile = class_chunk(hw, k, budget)                      # pixels whose K scores fit
    best = torch.empty(hw, dtype=torch.float32, device=device)
    labels = torch.empty(hw, dtype=torch.long, device=device)
    kept: List[torch.Tensor] = []
    for p0 in range(0, hw, tile):
        p1 = min(hw, p0 + tile)
        vol = masks_t[p0:p1] @ probs                       # tile x K, every class at once
        best[p0:p1], labels[p0:p1] = vol.max(1)            # first maximum on ties
        if scores:
            kept.append(vol)
    denom = denom.clamp_min(1e-12)
    out = torch.cat(kept).t().reshape(k, h, w).div_(denom) if scores else None
    return MaskSemantic(labels.view(h, w), (best.view(h, w) / denom).float(), out)


__all__ = ["DEFAULT_BUDGET", "class_chunk", "fold_argmax", "apply_prob_thd", "class_probabilities",
           "SoftmaxArgmax", "softmax_argmax", "MaskSemantic", "mask_semantic"]
