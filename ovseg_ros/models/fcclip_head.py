"""FC-CLIP's trained head and the vocabulary-free image path around a ConvNeXt CLIP.

``FCCLIPHeadWeights`` owns exactly the parameters of the released head
checkpoint (``sem_seg_head.pixel_decoder.*``, ``sem_seg_head.predictor.*``,
``void_embedding.weight``), so ``state_dict()`` keys are the reference keys.

``FCCLIPImageModel`` is ``engine.image_model``: B x 3 x H x W float RGB in
[0, 1] -> (mask logits, query class embeddings, mask-pooled CLIP embeddings)
[+ dense CLIP embeddings for MAFT+]. Everything that depends on the
vocabulary (cosines with text, ensemble, void) happens outside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..core.stage_timing import mark
from .deformable_attention import MSDeformAttn
from .pixel_decoder import MSDeformAttnPixelDecoder
from .normalise import normalise_unit_image
from .precision import fp32_region, matmul_weights_to
from .classifier import mask_pooling
from .transformer_decoder import MultiScaleMaskedTransformerDecoder

#: OpenAI CLIP normalisation (the reference's PIXEL_MEAN/STD divided by 255)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: the reference configs' PIXEL_MEAN/STD on 0..255 (FC-CLIP and MAFT+ eval configs): the
#: values the image is normalised with (models/normalise.py)
PIXEL_MEAN_255 = (122.7709383, 116.7460125, 104.09373615)
PIXEL_STD_255 = (68.5005327, 66.6321579, 70.32316305)
SIZE_DIVISIBILITY = 32
#: what runs in bf16/fp16 under a low-precision setting (the engines' describe() names it)
BF16_SCOPE = ("ConvNeXt trunk convolutions/MLPs; pixel decoder FFNs and convolutions "
              "(its deformable attention blocks in fp32); transformer decoder, mask pooling "
              "and CLIP head in fp32")


@dataclass(frozen=True)
class HeadSpec:
    """Architecture of the head. Defaults are the reference's (Mask2Former + FC-CLIP)."""

    in_channels: Tuple[int, int, int, int]        # res2..res5 channels of the CLIP trunk
    clip_embedding_dim: int                       # CLIP joint embedding width (768 for ConvNeXt-L)
    num_queries: int = 250
    conv_dim: int = 256
    mask_dim: int = 256
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    enc_ffn: int = 1024
    enc_points: int = 4
    dec_layers: int = 9
    dec_ffn: int = 2048


class FCCLIPHead(nn.Module):
    """``sem_seg_head``: pixel decoder + masked transformer decoder."""

    def __init__(self, spec: HeadSpec):
        super().__init__()
        chans = dict(zip(("res2", "res3", "res4", "res5"), spec.in_channels))
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            chans, conv_dim=spec.conv_dim, mask_dim=spec.mask_dim, nheads=spec.nheads,
            dim_feedforward=spec.enc_ffn, enc_layers=spec.enc_layers, n_points=spec.enc_points)
        self.predictor = MultiScaleMaskedTransformerDecoder(
            in_channels=spec.conv_dim, hidden_dim=spec.hidden_dim, num_queries=spec.num_queries,
            nheads=spec.nheads, dim_feedforward=spec.dec_ffn, dec_layers=spec.dec_layers,
            mask_dim=spec.mask_dim, clip_embedding_dim=spec.clip_embedding_dim)


class FCCLIPHeadWeights(nn.Module):
    """The trained parameters of FC-CLIP outside CLIP (the released checkpoint's keys)."""

    def __init__(self, spec: HeadSpec):
        super().__init__()
        self.spec = spec
        self.sem_seg_head = FCCLIPHead(spec)
        self.void_embedding = nn.Embedding(1, spec.clip_embedding_dim)


def convnext_clip_features(visual: nn.Module, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """res2..res5 of an open_clip TimmModel ConvNeXt trunk; 'clip_dense' = norm_pre(res5).

    Each stage's input is made fp32 (a no-op in fp32): on the bf16 path only the
    convolutions and MLPs round to bf16, the residual stream of the blocks stays fp32
    (timm's stage is its downsample, then its blocks)."""
    trunk = visual.trunk
    out = {}
    x = trunk.stem(x).float()
    for i, stage in enumerate(trunk.stages):
        x = stage.blocks(stage.downsample(x).float()).float()
        out[f"res{i + 2}"] = x
    out["clip_dense"] = trunk.norm_pre(x)
    return out


def clip_head(visual: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """CLIP's own pooling head (norm + MLP projection) applied to pre-pooled vectors:
    ... x C -> ... x D. Each vector passes as a 1x1 map, so the trunk's global pool
    is the identity and the result equals CLIP's image embedding of that region."""
    lead = pooled.shape[:-1]
    x = pooled.reshape(-1, pooled.shape[-1], 1, 1)
    x = visual.head(visual.trunk.head(x))
    return x.reshape(*lead, x.shape[-1])


def dense_vectors(dense: torch.Tensor, per_pixel: bool) -> torch.Tensor:
    """B x C x h x w -> B x h x w x C vectors for CLIP's head: each pixel's channels
    (``per_pixel``), or the reference MAFT+'s plain reshape of the channel-major map
    (row i of the flattened map is elements i*C .. i*C+C-1 of each image's C*h*w values)."""
    if per_pixel:
        return dense.permute(0, 2, 3, 1)
    b, c, h, w = dense.shape
    return dense.reshape(b, h, w, c)


def check_convnext_visual(visual: nn.Module, model_name: str) -> Tuple[int, int, int, int]:
    """res2..res5 channel widths of a ConvNeXt CLIP tower, or a clear error."""
    trunk = getattr(visual, "trunk", None)
    stages = getattr(trunk, "stages", None)
    if trunk is None or stages is None or len(stages) != 4 or not hasattr(trunk, "stem"):
        raise ValueError(f"open_clip model {model_name!r} is not a ConvNeXt CLIP (a timm trunk "
                         "with stem and 4 stages is required); use e.g. convnext_large_d_320")
    info = getattr(trunk, "feature_info", None)
    if info and len(info) == 4 and all("num_chs" in i for i in info):
        return tuple(int(i["num_chs"]) for i in info)
    chans = []
    for stage in stages:
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
        chans.append(convs[-1].out_channels if convs else None)
    if None in chans:
        raise ValueError(f"cannot read the stage widths of {model_name!r}")
    return tuple(chans)


class FCCLIPImageModel(nn.Module):
    """The vocabulary-free image path (what backends run and ONNX export traces).

    forward(images B x 3 x H x W in [0, 1]) returns a tuple:
      mask_logits  B x Q x Hp/4 x Wp/4  (Hp, Wp = H, W padded up to a multiple of 32)
      class_embed  B x Q x D            in-vocabulary query embeddings (before the cosine)
      clip_embed   B x Q x D            CLIP embeddings of each mask (out-of-vocabulary branch)
      dense_embed  B x D x Hp/32 x Wp/32  CLIP embeddings of the stride-32 map (only with
                                          ``dense_output``, for MAFT+'s CDT)

    ``dense_per_pixel`` picks how the dense map reaches CLIP's head. MAFT+'s reference
    (``visual_prediction_forward_convnext``) reshapes the B x C x h x w map to
    (B*h*w) x C without moving the channels last, so each "pixel" it projects is C
    consecutive values of the channel-major map (a scrambled mix of channels and
    positions); the released MAFT+ weights were trained on that. False (default)
    reproduces it; True projects each pixel's own C-vector (the evident intent).
    """

    def __init__(self, visual: nn.Module, head: FCCLIPHeadWeights, dense_output: bool = False,
                 dense_per_pixel: bool = False):
        super().__init__()
        self.visual = visual
        self.head = head
        self.dense_output = dense_output
        self.dense_per_pixel = dense_per_pixel
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN_255).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD_255).view(1, 3, 1, 1), False)

    def _stage(self, name: str) -> None:
        mark(name)   # the engine's timer, when the call runs inside its stage_timer

    def set_weight_dtype(self, dtype: torch.dtype) -> "FCCLIPImageModel":
        """Store the matmul weights of the ConvNeXt trunk and of the pixel decoder in
        ``dtype`` (bf16/fp16 under autocast): ``BF16_SCOPE``.

        The trunk's residual stream stays fp32; in the pixel decoder the deformable
        attention blocks stay fp32 (``MSDeformAttn``: projections, locations, sampling),
        only the encoder FFNs and the convolutions round; norms run on fp32. The
        transformer decoder, the mask pooling and CLIP's head run in fp32 (``forward``):
        they make the mask and class scores the labels are decided on.
        """
        trunk = self.visual.trunk
        matmul_weights_to(trunk.stem, dtype)
        matmul_weights_to(trunk.stages, dtype)
        decoder = self.head.sem_seg_head.pixel_decoder
        matmul_weights_to(decoder, dtype,
                          keep=[m for m in decoder.modules() if isinstance(m, MSDeformAttn)])
        return self

    def forward(self, images: torch.Tensor):
        x = normalise_unit_image(images, self.pixel_mean, self.pixel_std)
        h, w = x.shape[-2:]
        # zero padding *after* normalisation, bottom/right, as detectron2's ImageList
        x = F.pad(x, (0, (-w) % SIZE_DIVISIBILITY, 0, (-h) % SIZE_DIVISIBILITY))
        feats = convnext_clip_features(self.visual, x)
        self._stage("backbone")
        feats = {k: v.float() for k, v in feats.items()}
        # the pixel decoder under the caller's autocast (BF16_SCOPE), fp32 outputs
        mask_features, multi_scale = self.head.sem_seg_head.pixel_decoder(feats)
        self._stage("pixel_decoder")
        with fp32_region(x):   # everything after the pixel decoder: fp32 (set_weight_dtype)
            mask_logits, class_embed = self.head.sem_seg_head.predictor(multi_scale,
                                                                        mask_features)
            self._stage("transformer_decoder")
            dense = feats["clip_dense"]
            clip_embed = clip_head(self.visual, mask_pooling(dense, mask_logits))
            if not self.dense_output:
                self._stage("clip_pool")
                return mask_logits, class_embed, clip_embed
            dense_embed = clip_head(self.visual, dense_vectors(dense, self.dense_per_pixel))
            dense_embed = dense_embed.permute(0, 3, 1, 2)
            self._stage("clip_pool")
            return mask_logits, class_embed, clip_embed, dense_embed


__all__ = ["BF16_SCOPE", "HeadSpec", "FCCLIPHead", "FCCLIPHeadWeights", "FCCLIPImageModel",
           "CLIP_MEAN", "CLIP_STD", "PIXEL_MEAN_255", "PIXEL_STD_255", "SIZE_DIVISIBILITY",
           "convnext_clip_features", "clip_head", "dense_vectors",
           "check_convnext_visual"]
