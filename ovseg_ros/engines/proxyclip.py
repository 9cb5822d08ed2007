"""ProxyCLIP (Lan et al., ECCV 2024): training-free open-vocabulary semantic segmentation.

CLIP's last attention block is replaced by *proxy attention*: attention weights
come from the patch-feature similarity of a vision foundation model (VFM, e.g.
DINO), values from CLIP. DESIGN.md section 5 lists the constants reproduced here.

Image path (``ProxyCLIPImageModel``, run by a backend; no vocabulary inside):

    x (B x 3 x H x W in [0, 1])
      -> VFM patch features f (last block, normed, prefix tokens dropped)   B x C x h x w
      -> CLIP blocks 0..L-2, ln_1 of the last block, its value projection   B x D x H' x W'
      -> v resized bilinearly to h x w;  A = proxy_attention(f)
      -> out_proj(A . v) -> ln_post -> proj -> L2-normalise                 B x E x h x w

Text cosine, window stitching and post-processing run outside it, in the engine.

Fixed with respect to the reference implementation: non-square windows work
(rows and columns kept apart), the similarity mean is taken per sample (batched
windows give the same result as single windows), a pixel whose every
similarity falls below the threshold keeps attending to itself instead of
producing NaN, no hooks, and one attention matrix is shared by all heads
instead of being repeated per head (mathematically the same).
"""
from __future__ import annotations

import time
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, ConfigError
from ..core.panoptic_heuristic import semantic_to_panoptic
from ..core.preprocess import (centred_padding, lcm, pad_with_colour, resize_rgb,
                               short_side_size, sliding_windows, to_tensor)
from ..core.types import Prediction, VocabularyState
from ..registry import get_backend, register_engine
from ..weights import create_clip, create_vfm
from . import tiny_models  # noqa: F401  (registers the tiny test models)
from .base import Engine

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --- building blocks -------------------------------------------------------------------------
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


def _no_autocast(device_type: str):
    return torch.autocast(device_type=device_type, enabled=False)


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
        t = vis.conv1(x)
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
        t = pe.proj(x)
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
                 vfm_std=IMAGENET_STD):
        super().__init__()
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
        """Store parameters in ``dtype``; normalisation constants stay fp32 (the input
        is normalised in fp32 and cast by the first matmul)."""
        self.to(dtype)
        for name in ("clip_mean", "clip_std", "vfm_mean", "vfm_std"):
            setattr(self, name, getattr(self, name).float())
        return self

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter() if self.profile else 0.0
        feats = self.vfm((x - self.vfm_mean) / self.vfm_std)
        b, _, h, w = feats.shape
        t0 = self._tick("vfm", t0, feats)
        y, gh, gw = self.clip((x - self.clip_mean) / self.clip_std)
        v = self.clip.values(y)[:, 1:]                                   # B x N' x W (no CLS)
        v = v.transpose(1, 2).reshape(b, -1, gh, gw)
        v = F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)
        v = v.flatten(2).transpose(1, 2)                                 # B x hw x W
        t0 = self._tick("clip", t0, v)
        # The attention matrix decides which pixels are mixed; keep it in fp32 under
        # autocast (cheap: ~2% of the FLOPs) so its >= 0 threshold is not decided in bf16.
        with _no_autocast(x.device.type):
            attn = proxy_attention(feats.flatten(2).float(), self.beta, self.gamma)
            o = torch.bmm(attn, v.float()).to(v.dtype)   # back to the tower's dtype
        t0 = self._tick("attention", t0, o)
        o = self.clip.head(o)                                            # B x hw x E
        o = F.normalize(o.float(), dim=-1)
        out = o.transpose(1, 2).reshape(b, -1, h, w)
        self._tick("clip", t0, out)
        return out


# --- the engine --------------------------------------------------------------------------------
@register_engine("proxyclip")
class ProxyCLIPEngine(Engine):
    name = "proxyclip"
    default_templates = "imagenet80"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        from ..backends.torch_backend import check_precision, resolve_device

        # Device/precision errors before minutes of weight loading.
        check_precision(cfg["precision"], resolve_device(cfg["device"]))
        if cfg["num_threads"] > 0:
            torch.set_num_threads(cfg["num_threads"])
        pc = cfg.group("proxyclip")
        random_init = cfg["random_init"]
        clip = create_clip(pc["clip_model"], pc["clip_pretrained"], pc["clip_checkpoint"],
                           random_init=random_init, weights_dir=cfg["weights_dir"])
        vfm = create_vfm(pc["vfm_model"], pc["vfm_checkpoint"], random_init=random_init,
                         weights_dir=cfg["weights_dir"])
        self.random_weights = clip.random or vfm.random
        self._clip_id = clip.identity
        self._vfm_id = vfm.identity
        self.clip_model = clip.model
        visual = clip.model.visual
        vfm_cfg = getattr(vfm.model, "pretrained_cfg", None) or {}
        self.image_model = ProxyCLIPImageModel(
            visual, vfm.model, pc["beta"], pc["gamma"],
            clip_mean=tuple(getattr(visual, "image_mean", None) or OPENAI_MEAN),
            clip_std=tuple(getattr(visual, "image_std", None) or OPENAI_STD),
            vfm_mean=tuple(vfm_cfg.get("mean", IMAGENET_MEAN)),
            vfm_std=tuple(vfm_cfg.get("std", IMAGENET_STD)))
        if cfg["backend"] == "torch" and cfg["precision"] != "fp32":
            # Store the image path's weights in the low-precision dtype once, and let
            # autocast handle mixed inputs: on the CPU, autocast alone re-casts every
            # weight and activation per call (measured: ~35% of the bf16 run time in copies).
            # The text tower is a separate module and stays fp32.
            self.image_model.set_weight_dtype(
                torch.bfloat16 if cfg["precision"] == "bf16" else torch.float16)
        self.backend = get_backend(cfg["backend"])(self.image_model, cfg,
                                                   model_id=self.model_id())
        self.device = self.backend.device
        self.image_model.profile = cfg["backend"] == "torch"
        self.clip_model.to(self.device).eval()
        import open_clip

        self._tokenizer = open_clip.get_tokenizer(pc["clip_model"])
        self._pad_colour = torch.tensor(OPENAI_MEAN)  # zero after CLIP normalisation

    # --- identities -------------------------------------------------------------------------
    def text_encoder_id(self) -> str:
        return f"open_clip:{self._clip_id}"

    def model_id(self) -> str:
        pc = self.cfg.group("proxyclip")
        return (f"proxyclip|{self._clip_id}|{self._vfm_id}|beta={pc['beta']}|"
                f"gamma={pc['gamma']}")

    # --- text -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_prompts(self, prompts: List[str]) -> torch.Tensor:
        tokens = self._tokenizer(list(prompts)).to(self.device)
        emb = self.clip_model.encode_text(tokens).float()
        return F.normalize(emb, dim=-1)

    # --- image ----------------------------------------------------------------------------------
    def window_layout(self, h: int, w: int):
        """(resized h, w), windows, padding of one window, for a frame of size h x w."""
        pc = self.cfg.group("proxyclip")
        rh, rw = short_side_size(h, w, pc["short_side"])
        if pc["sliding_window"]:
            windows = sliding_windows(rh, rw, pc["crop_size"], pc["stride"])
        else:
            windows = [(0, rh, 0, rw)]
        wh, ww = windows[0][1] - windows[0][0], windows[0][3] - windows[0][2]
        pad = centred_padding(wh, ww, self.image_model.pad_multiple)
        return (rh, rw), windows, pad

    @torch.inference_mode()
    def dense_logits(self, rgb: np.ndarray, embeddings: torch.Tensor,
                     timings: Optional[dict] = None) -> torch.Tensor:
        """Cosine logits S x H x W at the input's size (before logit_scale and softmax)."""
        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        h0, w0 = rgb.shape[:2]
        (rh, rw), windows, pad = self.window_layout(h0, w0)
        img = to_tensor(resize_rgb(rgb, (rh, rw)))
        crops = torch.stack([img[:, y1:y2, x1:x2] for y1, y2, x1, x2 in windows])
        crops = pad_with_colour(crops, pad, self._pad_colour)
        ph, pw = crops.shape[-2:]
        left, _, top, _ = pad
        wh, ww = windows[0][1] - windows[0][0], windows[0][3] - windows[0][2]
        emb = embeddings.to(self.device, torch.float32)
        s = emb.shape[0]
        acc = torch.zeros((s, rh, rw), device=self.device)
        count = torch.zeros((1, rh, rw), device=self.device)
        timings["preprocess"] = time.perf_counter() - t0
        self.image_model.last_times = {}
        t_model = t_text = 0.0
        bs = self.cfg["proxyclip.window_batch_size"]
        for i in range(0, len(windows), bs):
            t1 = time.perf_counter()
            feats = self.backend(crops[i:i + bs])                       # b x E x h x w
            t2 = time.perf_counter()
            logits = torch.einsum("behw,se->bshw", feats, emb)
            logits = F.interpolate(logits, size=(ph, pw), mode="bilinear", align_corners=False)
            logits = logits[:, :, top:top + wh, left:left + ww]
            for k, (y1, y2, x1, x2) in enumerate(windows[i:i + bs]):
                acc[:, y1:y2, x1:x2] += logits[k]
                count[:, y1:y2, x1:x2] += 1
            t_model += t2 - t1
            t_text += time.perf_counter() - t2
        t3 = time.perf_counter()
        logits = acc / count
        if (rh, rw) != (h0, w0):
            logits = F.interpolate(logits[None], size=(h0, w0), mode="bilinear",
                                   align_corners=False)[0]
        timings["image_model"] = t_model
        timings.update(self.image_model.last_times)
        timings["text"] = t_text + time.perf_counter() - t3
        return logits

    def class_probabilities(self, logits: torch.Tensor, synonym_class: torch.Tensor,
                            num_classes: int) -> torch.Tensor:
        """S x H x W logits -> C x H x W probabilities: softmax over synonyms of
        logit_scale * logits, then the max over each class's synonyms."""
        probs = (logits * self.cfg["proxyclip.logit_scale"]).softmax(dim=0)
        s = probs.shape[0]
        if s == num_classes:
            return probs
        idx = synonym_class.to(probs.device).view(s, 1, 1).expand_as(probs)
        out = torch.zeros((num_classes,) + probs.shape[1:], dtype=probs.dtype,
                          device=probs.device)
        return out.scatter_reduce_(0, idx, probs, reduce="amax", include_self=False)

    def predict(self, rgb: np.ndarray, vocab: VocabularyState) -> Prediction:
        t_start = time.perf_counter()
        timings: dict = {}
        logits = self.dense_logits(rgb, vocab.embeddings, timings)
        t0 = time.perf_counter()
        with torch.inference_mode():
            probs = self.class_probabilities(logits, vocab.synonym_class, vocab.num_classes)
            conf, semantic = probs.max(dim=0)
            thd = self.cfg["prob_thd"]
            if thd > 0:
                semantic = torch.where(conf < thd, torch.zeros_like(semantic), semantic)
        semantic_np = semantic.to(torch.int32).cpu().numpy()
        conf_np = conf.float().cpu().numpy()
        scores = probs.float().cpu().numpy()
        panoptic, segments = semantic_to_panoptic(
            semantic_np, conf_np, vocab.is_thing, self.cfg["proxyclip.min_thing_area"])
        timings["post"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start
        return Prediction(semantic=semantic_np, scores=scores, panoptic=panoptic,
                          segments=segments, vocabulary=vocab.names,
                          vocabulary_version=vocab.version, random_weights=self.random_weights,
                          engine=self.name, timings=timings)

    def describe(self) -> dict:
        info = super().describe()
        pc = self.cfg.group("proxyclip")
        info.update({"clip_model": pc["clip_model"], "clip_weights": self._clip_id,
                     "vfm_model": pc["vfm_model"], "vfm_weights": self._vfm_id,
                     "sliding_window": pc["sliding_window"], "crop_size": pc["crop_size"],
                     "stride": pc["stride"], "short_side": pc["short_side"]})
        info.update(self.backend.describe())
        return info


__all__ = ["ProxyCLIPEngine", "ProxyCLIPImageModel", "proxy_attention", "resize_pos_grid"]
