"""Sine position encoding of a feature map (DETR / Mask2Former form).

The encoding depends only on the map's height and width (there is no padding
mask at inference), so it has no parameters and is identical for every image
in a batch.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """B x C x H x W -> B x 2*num_pos_feats x H x W: [sin/cos of y | sin/cos of x].

    With ``normalize`` the cumulative coordinates 1..H (1..W) are scaled to
    (0, 2*pi] before division by temperature**(2*(i//2)/num_pos_feats).
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0,
                 normalize: bool = True, scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        # 1-based coordinates, as the cumulative sum of an all-valid mask gives.
        y_embed = torch.arange(1, h + 1, dtype=torch.float32, device=x.device)
        x_embed = torch.arange(1, w + 1, dtype=torch.float32, device=x.device)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[-1:] + eps) * self.scale
            x_embed = x_embed / (x_embed[-1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor")
                                     / self.num_pos_feats)
        pos_y = y_embed[:, None] / dim_t            # H x F
        pos_x = x_embed[:, None] / dim_t            # W x F
        # interleave sin (even features) and cos (odd features)
        pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
        pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
        pos = torch.cat((pos_y[:, None, :].expand(h, w, -1),
                         pos_x[None, :, :].expand(h, w, -1)), dim=2)   # H x W x 2F
        return pos.permute(2, 0, 1).unsqueeze(0).expand(b, -1, -1, -1)
