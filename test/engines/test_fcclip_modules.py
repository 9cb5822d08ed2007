"""Building blocks of the FC-CLIP head checked against their definitions."""
import math

import torch

from ovseg_ros.models.position_encoding import PositionEmbeddingSine
from ovseg_ros.models.transformer_decoder import (MultiScaleMaskedTransformerDecoder,
                                                  mask_pooling)

torch.set_num_threads(1)


def test_sine_position_encoding_matches_cumsum_definition():
    """DETR form: cumulative sums of an all-valid mask, normalised to 2*pi,
    divided by 10000^(2*(i//2)/F), sin on even and cos on odd features, [y | x]."""
    f, h, w = 8, 3, 5
    pe = PositionEmbeddingSine(f, normalize=True)(torch.zeros(2, 7, h, w))
    assert pe.shape == (2, 2 * f, h, w)
    not_mask = torch.ones(1, h, w)
    y = not_mask.cumsum(1)
    x = not_mask.cumsum(2)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    dim_t = 10000 ** (2 * (torch.arange(f) // 2) / f)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    expected = torch.cat((py, px), dim=3).permute(0, 3, 1, 2)
    torch.testing.assert_close(pe[:1], expected)
    torch.testing.assert_close(pe[1], pe[0])


def test_attention_mask_blocks_below_half_and_frees_empty_rows():
    dec = MultiScaleMaskedTransformerDecoder(hidden_dim=16, num_queries=3, nheads=2,
                                             dim_feedforward=8, dec_layers=1, mask_dim=16,
                                             clip_embedding_dim=8, in_channels=16)
    logits = torch.full((1, 3, 2, 2), -5.0)
    logits[0, 0, 0, 0] = 5.0          # query 0 may attend only to pixel 0
    logits[0, 2] = 5.0                # query 2 everywhere; query 1: empty mask
    m = dec._attn_mask(logits, (2, 2))
    assert m.shape == (2, 3, 4) and m.dtype == torch.bool          # (B*heads) x Q x HW
    assert m[0, 0].tolist() == [False, True, True, True]
    assert m[0, 1].tolist() == [False] * 4                          # fully masked -> free
    assert m[0, 2].tolist() == [False] * 4
    assert torch.equal(m[0], m[1])                                  # same for every head


def test_mask_pooling_averages_inside_binarised_masks():
    feats = torch.arange(8, dtype=torch.float32).view(1, 2, 2, 2)   # C=2, 2x2
    masks = torch.tensor([[[[3.0, -1.0], [0.5, -2.0]], [[-1.0, -1.0], [-1.0, -1.0]]]])
    pooled = mask_pooling(feats, masks)
    # query 0: pixels (0,0) and (1,0) -> channel 0: (0+2)/2, channel 1: (4+6)/2
    torch.testing.assert_close(pooled[0, 0], torch.tensor([1.0, 5.0]))
    torch.testing.assert_close(pooled[0, 1], torch.zeros(2))        # empty mask -> 0


def test_decoder_outputs_and_batch_independence():
    torch.manual_seed(0)
    dec = MultiScaleMaskedTransformerDecoder(hidden_dim=32, num_queries=5, nheads=4,
                                             dim_feedforward=64, dec_layers=4, mask_dim=32,
                                             clip_embedding_dim=12, in_channels=32).eval()
    levels = [torch.randn(2, 32, 2, 3), torch.randn(2, 32, 4, 6), torch.randn(2, 32, 8, 12)]
    mf = torch.randn(2, 32, 16, 24)
    with torch.no_grad():
        masks, emb = dec(levels, mf)
        masks1, emb1 = dec([l[1:] for l in levels], mf[1:])
    assert masks.shape == (2, 5, 16, 24) and emb.shape == (2, 5, 12)
    torch.testing.assert_close(masks[1:], masks1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb[1:], emb1, atol=1e-5, rtol=1e-5)


def test_attention_mask_uses_sigmoid_rounding_like_the_reference():
    """The reference blocks where sigmoid(logit) < 0.5. In fp32 sigmoid rounds to exactly
    0.5 for |logit| below ~6e-8, so such a pixel stays open; 'logit < 0' would block it
    (found while comparing with bytedance/fc-clip, scripts/compare_fcclip_reference.py)."""
    dec = MultiScaleMaskedTransformerDecoder(hidden_dim=16, num_queries=1, nheads=2,
                                             dim_feedforward=8, dec_layers=1, mask_dim=16,
                                             clip_embedding_dim=8, in_channels=16)
    logits = torch.tensor([[[[-1e-9, -1e-3], [5.0, -5.0]]]])
    assert torch.sigmoid(torch.tensor(-1e-9)) == 0.5           # the fp32 fact relied on
    m = dec._attn_mask(logits, (2, 2))
    assert m[0, 0].tolist() == [False, True, False, True]


def test_intermediate_predictions_end_with_the_inference_output():
    """intermediate=True (used for the layer-by-layer reference comparison) gives one
    prediction per layer plus the learned queries; its last one is the normal output."""
    torch.manual_seed(1)
    dec = MultiScaleMaskedTransformerDecoder(hidden_dim=32, num_queries=4, nheads=4,
                                             dim_feedforward=32, dec_layers=3, mask_dim=32,
                                             clip_embedding_dim=8, in_channels=32).eval()
    levels = [torch.randn(1, 32, 2, 2), torch.randn(1, 32, 4, 4), torch.randn(1, 32, 8, 8)]
    mf = torch.randn(1, 32, 16, 16)
    with torch.no_grad():
        masks, emb = dec(levels, mf)
        all_masks, all_emb = dec(levels, mf, intermediate=True)
    assert len(all_masks) == len(all_emb) == 4
    assert torch.equal(all_masks[-1], masks) and torch.equal(all_emb[-1], emb)
    # the learned-query prediction does not depend on the image levels
    with torch.no_grad():
        other, _ = dec([torch.randn_like(l) for l in levels], mf, intermediate=True)
    assert torch.equal(other[0], all_masks[0]) and not torch.equal(other[-1], all_masks[-1])
