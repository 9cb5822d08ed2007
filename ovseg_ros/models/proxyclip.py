"""ProxyCLIP's networks (Lan et al., ECCV 2024): the vocabulary-free image path.

CLIP's last attention block is replaced by *proxy attention*: attention weights
come from the patch-feature similarity of a vision foundation model (VFM, e.g.
DINO), values from CLIP. ``ovseg_ros/engines/proxyclip.py`` runs this module
(through a backend) and does the text cosine, window stitching and
post-processing; docs/proxyclip.md lists the reference constants.
"""
from __future__ import annotations

import time
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..core.preprocess import lcm
from .normalise import normalise_unit_image
from .precision import fp32_region, matmul_weights_to
from .quantize import linears_to_int8, split_self_attention

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: the official code's input normalisation (mc-lan/ProxyCLIP's ``SegDataPreProcessor``, on
#: 0..255): OpenAI's mean/std x 255 rounded to 3 decimals (122.7709383 -> 122.771, ...)
OFFICIAL_MEAN_255 = (122.771, 116.746, 104.094)
OFFICIAL_STD_255 = (68.501, 66.632, 70.323)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_pos_grid(grid: torch.Tensor, out_hw: Tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a 1 x C x h0 x w0 position-embedding grid to ``out_hw``.

    Uses the DINO convention the reference relies on for both CLIP and DINO: the
    scale factor is (n + 0.1) / n0 (so the output size floors to n while sample
    positions follow that factor), not n / n0. Kept for fidelity with the
    published numbers; it is a shape-only computation, so tracing bakes it in.
    """
    # int(): under ONNX tracing shapes are traced tensors, and interpolate's
    # scale_factor must be Python floats (the graph is exported per input size)
    h0, w0 = (int(v) for v in grid.shape[-2:])
    h, w = (int(v) for v in out_hw)
    if (h, w) == (h0, w0):
        return grid
    out = F.interpolate(grid, scale_factor=((h + 0.1) / h0, (w + 0.1) / w0), mode="bicubic")
    return out[..., :h, :w]


def proxy_attention(feats: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Attention weights from VFM features: B x C x N -> B x N x N (rows sum to 1).

    f = normalise(feats over C); S = f^T f; A = gamma * (S - beta * mean(S));
    entries below 0 are excluded (-inf) except the diagonal, which keeps a row
    whose entries are all negative (near-uniform scenes) finite: such a pixel
    attends to itself. Where the reference is defined (some entry >= 0 in a row)
    this equals it, since the diagonal S_ii = 1 is the row's largest entry.
    The mean is taken per sample.
    """
    f = F.normalize(feats, dim=1)
    sim = torch.bmm(f.transpose(1, 2), f)
    mean = sim.mean(dim=(1, 2), keepdim=True)
    logits = (sim - mean * beta) * gamma
    n = logits.shape[-1]
    # built as float then cast: ONNX Runtime has no bool EyeLike kernel (ONNX export)
    eye = torch.eye(n, dtype=logits.dtype, device=logits.device).bool()
    logits = logits.masked_fill((logits < 0) & ~eye, float("-inf"))
    return logits.softmax(dim=-1)


class ClipTrunk(nn.Module):
    """An open_clip VisionTransformer up to the input of its last attention block."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        from open_clip.transformer import VisionTransformer

        if not isinstance(visual, VisionTransformer) or getattr(visual, "attn_pool", None) \
                is not None or getattr(visual, "proj", None) is None:
            raise ConfigError("config key 'proxyclip.clip_model': ProxyCLIP needs an open_clip "
                              "VisionTransformer CLIP with a projection and no attention pooling "
                              f"(e.g. ViT-B-16), got {type(visual).__name__}")
        self.visual = visual
        self.patch = tuple(visual.patch_size)
        self.grid0 = tuple(visual.grid_size)
        blocks = visual.transformer.resblocks
        self.blocks = nn.ModuleList(list(blocks)[:-1])
        self.last = blocks[-1]
        self.batch_first = bool(getattr(visual.transformer, "batch_first", True))
        self.width = visual.class_embedding.shape[0]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """x: B x 3 x H x W (CLIP-normalised) -> (ln_1 output B x (1+N) x W, grid h, grid w)."""
        vis = self.visual
        # the residual stream keeps the embeddings' dtype (fp32 on the bf16 path, where only
        # the matmul weights are bf16: see models/precision.py)
        t = vis.conv1(x).to(vis.class_embedding.dtype)
        b, c, gh, gw = t.shape
        t = t.reshape(b, c, gh * gw).transpose(1, 2)
        cls = vis.class_embedding.to(t.dtype).view(1, 1, c).expand(b, 1, c)
        t = torch.cat([cls, t], dim=1)
        pos = vis.positional_embedding.to(t.dtype)
        grid = pos[1:].reshape(1, self.grid0[0], self.grid0[1], c).permute(0, 3, 1, 2)
        grid = resize_pos_grid(grid, (gh, gw)).permute(0, 2, 3, 1).reshape(gh * gw, c)
        t = t + torch.cat([pos[:1], grid], dim=0).unsqueeze(0)
        t = vis.patch_dropout(t)
        t = vis.ln_pre(t)
        if not self.batch_first:
            t = t.transpose(0, 1)
        for blk in self.blocks:
            t = blk(t)
        if not self.batch_first:
            t = t.transpose(0, 1)
        return self.last.ln_1(t), gh, gw

    def low_precision_attention_inputs(self, dtype: torch.dtype) -> None:
        """Feed each block's nn.MultiheadAttention its input in ``dtype`` (that of its
        bf16/fp16 weights). With an fp32 residual stream the input would be fp32: the
        module then leaves its fused inference path and projects a transposed view,
        which a bf16 matmul runs as a broadcast bmm copying the weight per token
        (measured 5x slower for ViT-B/16). The cast is the one autocast does anyway."""
        def cast(module, args, kwargs):
            if not args or not isinstance(args[0], torch.Tensor) or args[0].dtype == dtype:
                return None
            q = args[0].to(dtype)
            rest = tuple(q if a is args[0] else a for a in args[1:])
            return (q,) + rest, kwargs

        for blk in self.blocks:
            if isinstance(getattr(blk, "attn", None), nn.MultiheadAttention):
                blk.attn.register_forward_pre_hook(cast, with_kwargs=True)

    def values(self, y: torch.Tensor) -> torch.Tensor:
        """The last block's value projection of ln_1 output y (B x L x W)."""
        attn = self.last.attn
        w = self.width
        return F.linear(y, attn.in_proj_weight[2 * w:], attn.in_proj_bias[2 * w:])

    def head(self, o: torch.Tensor) -> torch.Tensor:
        """out_proj, then the tower's ln_post and projection: B x N x W -> B x N x E."""
        o = self.last.attn.out_proj(o)
        return self.visual.ln_post(o) @ self.visual.proj


class VfmTrunk(nn.Module):
    """A timm VisionTransformer returning normed last-block patch features (prefix dropped)."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        if not isinstance(vit, VisionTransformer) or vit.pos_embed is None:
            raise ConfigError("config key 'proxyclip.vfm_model': the VFM must be a timm "
                              "VisionTransformer with an absolute position embedding (e.g. "
                              f"vit_base_patch8_224.dino), got {type(vit).__name__}")
        self.vit = vit
        self.patch = tuple(vit.patch_embed.patch_size)
        self.grid0 = tuple(vit.patch_embed.grid_size)
        self.num_prefix = int(vit.num_prefix_tokens)
        self.no_embed_class = bool(vit.no_embed_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x 3 x H x W (VFM-normalised) -> B x C x h x w."""
        vit = self.vit
        pe = vit.patch_embed
        t = pe.proj(x).to(vit.pos_embed.dtype)     # fp32 residual stream, as in ClipTrunk
        b, c, gh, gw = t.shape
        t = pe.norm(t.flatten(2).transpose(1, 2))
        pos = vit.pos_embed
        n_pos_prefix = 0 if self.no_embed_class else self.num_prefix
        grid = pos[:, n_pos_prefix:].reshape(1, self.grid0[0], self.grid0[1], c)
        grid = resize_pos_grid(grid.permute(0, 3, 1, 2), (gh, gw))
        grid = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, c)
        prefix = []
        if vit.cls_token is not None:
            prefix.append(vit.cls_token.expand(b, -1, -1))
        if vit.reg_token is not None:
            prefix.append(vit.reg_token.expand(b, -1, -1))
        if self.no_embed_class:
            t = torch.cat(prefix + [t + grid], dim=1)
        else:
            t = torch.cat(prefix + [t], dim=1) + torch.cat([pos[:, :n_pos_prefix], grid], dim=1)
        t = vit.pos_drop(t)
        t = vit.patch_drop(t)
        t = vit.norm_pre(t)
        t = vit.blocks(t)
        t = vit.norm(t)
        return t[:, self.num_prefix:].transpose(1, 2).reshape(b, c, gh, gw)


class ProxyCLIPImageModel(nn.Module):
    """B x 3 x H x W float in [0, 1] -> B x E x h x w L2-normalised dense CLIP features.

    H and W must be multiples of both patch sizes (the engine pads windows).
    Set ``profile = True`` to record per-stage seconds in ``last_times`` (eager only).
    """

    def __init__(self, clip_visual: nn.Module, vfm: nn.Module, beta: float, gamma: float,
                 clip_mean=OPENAI_MEAN, clip_std=OPENAI_STD, vfm_mean=IMAGENET_MEAN,
                 vfm_std=IMAGENET_STD, official_normalisation: bool = False):
        super().__init__()
        # official_normalisation: the official code's arithmetic (mc-lan/ProxyCLIP): CLIP
        # gets (k - 122.771) / 68.501 ... on the uint8 values k (rounded constants), and the
        # VFM gets that tensor un-normalised with OpenAI's exact mean/std, then ImageNet-
        # normalised (its ``norm(unnorm(img))``); clip_mean / clip_std are then unused.
        # Otherwise both normalise the [0, 1] input with exact constants.
        self.official_normalisation = bool(official_normalisation)
        self.register_buffer("official_mean", torch.tensor(OFFICIAL_MEAN_255).view(1, 3, 1, 1),
                             False)
        self.register_buffer("official_std", torch.tensor(OFFICIAL_STD_255).view(1, 3, 1, 1),
                             False)
        self.register_buffer("unnorm_mean", torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("unnorm_std", torch.tensor(OPENAI_STD).view(1, 3, 1, 1), False)
        self.clip = ClipTrunk(clip_visual)
        self.vfm = VfmTrunk(vfm)
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.register_buffer("clip_mean", torch.tensor(clip_mean).view(1, 3, 1, 1), False)
        self.register_buffer("clip_std", torch.tensor(clip_std).view(1, 3, 1, 1), False)
        self.register_buffer("vfm_mean", torch.tensor(vfm_mean).view(1, 3, 1, 1), False)
        self.register_buffer("vfm_std", torch.tensor(vfm_std).view(1, 3, 1, 1), False)
        self.profile = False
        self.last_times: dict = {}

    def set_weight_dtype(self, dtype: torch.dtype) -> "ProxyCLIPImageModel":
        """Store the trunks' matmul weights in ``dtype`` (bf16/fp16 runs under autocast).

        The heavy matmuls (both ViT trunks, the last block's value projection)
        run in ``dtype``; residual streams, norms, embeddings, the proxy
        attention and the head after it (out_proj, ln_post, proj) stay fp32:
        with the residual stream in bf16, labels differed from fp32 on ~0.5-1 %
        of the pixels of real photos (random weights), see docs/proxyclip.md.
        """
        matmul_weights_to(self.clip, dtype, keep=[self.clip.last.attn.out_proj])
        matmul_weights_to(self.vfm, dtype)
        self.clip.low_precision_attention_inputs(dtype)
        return self

    def quantize_int8(self, clip_attention: bool = True) -> int:
        """``precision: int8`` (CPU): the trunks' ``nn.Linear`` layers become dynamic int8
        linears (``models/quantize.py``), once; returns how many.

        Swapped: every linear of CLIP's blocks 0..L-2 (MLPs, and with ``clip_attention``
        the attention projections, after ``split_self_attention`` gives them nn.Linear
        form) and of the VFM's blocks (attention and MLP). The last CLIP block's value
        projection, the proxy attention and the head after it (out_proj, ln_post, proj)
        stay fp32, as in bf16: the attention matrix decides which pixels are mixed and
        the head makes the features the text is compared with (labels: docs/proxyclip.md).
        """
        if clip_attention:
            split_self_attention(self.clip.blocks)
        return linears_to_int8(self.clip.blocks, self.vfm.vit.blocks)

    @property
    def pad_multiple(self) -> int:
        ps = [*self.clip.patch, *self.vfm.patch]
        m = 1
        for p in ps:
            m = lcm(m, int(p))
        return m

    def _tick(self, key: str, t0: float, x: torch.Tensor) -> float:
        if not self.profile:
            return t0
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        t1 = time.perf_counter()
        self.last_times[key] = self.last_times.get(key, 0.0) + (t1 - t0)
        return t1

    def normalise(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """[0, 1] input -> (CLIP input, VFM input); see ``official_normalisation``."""
        if not self.official_normalisation:
            return (x - self.clip_mean) / self.clip_std, (x - self.vfm_mean) / self.vfm_std
        x_clip = normalise_unit_image(x, self.official_mean, self.official_std)
        unnorm = x_clip * self.unnorm_std + self.unnorm_mean
        return x_clip, (unnorm - self.vfm_mean) / self.vfm_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter() if self.profile else 0.0
        x_clip, x_vfm = self.normalise(x)
        feats = self.vfm(x_vfm)
        b, _, h, w = feats.shape
        t0 = self._tick("vfm", t0, feats)
        y, gh, gw = self.clip(x_clip)
        v = self.clip.values(y)[:, 1:]                                   # B x N' x W (no CLS)
        v = v.transpose(1, 2).reshape(b, -1, gh, gw)
        v = F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)
        v = v.flatten(2).transpose(1, 2)                                 # B x hw x W
        t0 = self._tick("clip", t0, v)
        # The attention matrix decides which pixels are mixed, the head makes the features
        # the text is compared with: both in fp32 without autocast (a few % of the FLOPs), so
        # the >= 0 threshold and the cosine are not decided in bf16.
        with fp32_region(x):
            attn = proxy_attention(feats.flatten(2).float(), self.beta, self.gamma)
            o = torch.bmm(attn, v.float())
            t0 = self._tick("attention", t0, o)
            o = self.clip.head(o)                                        # B x hw x E
            o = F.normalize(o.float(), dim=-1)
        out = o.transpose(1, 2).reshape(b, -1, h, w)
        self._tick("clip", t0, out)
        return out


__all__ = ["ProxyCLIPImageModel", "ClipTrunk", "VfmTrunk", "proxy_attention", "resize_pos_grid",
           "OPENAI_MEAN", "OPENAI_STD", "OFFICIAL_MEAN_255", "OFFICIAL_STD_255", "IMAGENET_MEAN",
           "IMAGENET_STD"]
