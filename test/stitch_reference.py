"""The step-by-step window-stitching chain that ovseg_ros/core/window_stitch.py replaces:
the reference the tests hold the operator and the ProxyCLIP engine to."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def step_chain(low, padded, pad_top_left, windows, resized, size):
    """The former path, one call over all synonyms: n x S x gh x gw -> S x H x W."""
    (ph, pw), (top, left), (rh, rw), (h0, w0) = padded, pad_top_left, resized, size
    wh, ww = windows[0][1] - windows[0][0], windows[0][3] - windows[0][2]
    up = F.interpolate(low, size=(ph, pw), mode="bilinear",
                       align_corners=False)[:, :, top:top + wh, left:left + ww]
    acc = torch.zeros((low.shape[1], rh, rw))
    count = torch.zeros((1, rh, rw))
    for k, (y1, y2, x1, x2) in enumerate(windows):
        acc[:, y1:y2, x1:x2] += up[k]
        count[:, y1:y2, x1:x2] += 1
    out = acc / count
    if (rh, rw) != (h0, w0):
        out = F.interpolate(out[None], size=(h0, w0), mode="bilinear", align_corners=False)[0]
    return out
