"""ProxyCLIP (Lan et al., ECCV 2024): training-free open-vocabulary semantic segmentation.

CLIP's last attention block is replaced by *proxy attention*: attention weights
come from the patch-feature similarity of a vision foundation model (VFM, e.g.
DINO), values from CLIP. docs/proxyclip.md lists the reference constants reproduced
here. The networks live in ovseg_ros/models/proxyclip.py (re-exported here).

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
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..backends.base import ExportSpec
from ..config import Config
from ..core.panoptic_heuristic import semantic_to_panoptic
from ..core.bounded_labels import MIN_SYNONYMS, bounded_argmax, tile_plan
from ..core.postprocess import (apply_prob_thd, class_chunk, class_probabilities,
                               softmax_argmax)
from ..core.preprocess import (centred_padding, pad_with_colour, resize_rgb, short_side_size,
                               sliding_windows, to_tensor, window_grid)
from ..core.resize_bounds import BoundedSize, capped
from ..core.window_stitch import Layout, StitchCache
from ..core.types import Prediction, VocabularyState
from ..models.proxyclip import (IMAGENET_MEAN, IMAGENET_STD, OFFICIAL_MEAN_255,  # noqa: F401
                               OPENAI_MEAN,
                               OPENAI_STD, ClipTrunk, ProxyCLIPImageModel, VfmTrunk,
                               proxy_attention, resize_pos_grid)
from ..registry import register_engine
from ..weights import create_clip, create_vfm
from ..weights.sources import OpenClipWeights, TimmWeights, WeightsNeed
from .base import Engine, OpenClipText, graph_settings


# --- the engine --------------------------------------------------------------------------------
@register_engine("proxyclip")
class ProxyCLIPEngine(OpenClipText, Engine):
    name = "proxyclip"
    default_templates = "imagenet80"
    docs = "docs/proxyclip.md"
    #: bf16/fp16: the CLIP and DINO trunks' matmuls (residual streams fp32); the proxy
    #: attention, CLIP's head after it and the cosines stay fp32 (set_weight_dtype); int8:
    #: the trunks' nn.Linear layers (quantize_int8), the same stages fp32
    precision_stages = (("trunks", True), ("proxy_attention_head", False), ("post", False))
    #: ``predict(..., confidence=False)`` skips the confidence: labels alone come from the
    #: candidates per tile (core/bounded_labels.py), the confidence needs every synonym
    skips_confidence = True

    @classmethod
    def weights_needs(cls, cfg: Config) -> Tuple[WeightsNeed, ...]:
        """CLIP from open_clip (tag or file), the VFM from timm (tag in its name, or file)."""
        return (OpenClipWeights("proxyclip.clip_model", "proxyclip.clip_pretrained",
                                "proxyclip.clip_checkpoint"),
                TimmWeights("proxyclip.vfm_model", "proxyclip.vfm_checkpoint"))

    def build(self, checkpoint: Optional[Path]) -> None:
        cfg = self.cfg
        pc = cfg.group("proxyclip")
        random_init = cfg["random_init"]
        clip = create_clip(pc["clip_model"], pc["clip_pretrained"], pc["clip_checkpoint"],
                           random_init=random_init, weights_dir=cfg["weights_dir"])
        vfm = create_vfm(pc["vfm_model"], pc["vfm_checkpoint"], random_init=random_init,
                         weights_dir=cfg["weights_dir"])
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
            vfm_std=tuple(vfm_cfg.get("std", IMAGENET_STD)),
            official_normalisation=pc["normalisation"] == "official")
        # cast_weights: an eager bf16/fp16 backend stores the image path's weights in that
        # dtype once (autocast alone re-casts every weight per call on the CPU); the text
        # tower is a separate module and stays fp32. quantize_int8: precision int8.
        export = ExportSpec(self.image_model, model_id=self.model_id(),
                            graph_settings=graph_settings(cfg, "proxyclip"),
                            cast_weights=self.image_model.set_weight_dtype,
                            quantize_int8=self.image_model.quantize_int8)
        self.backend = self.add_backend("image", export, max_batch=pc["window_batch_size"])
        # per-stage timers inside the module only measure something when it runs eagerly
        self.image_model.profile = self.backend.eager
        self.clip_model.to(self.device).eval()
        import open_clip

        self._tokenizer = open_clip.get_tokenizer(pc["clip_model"])
        # zero after CLIP normalisation (the official code pads the normalised window with 0)
        self._pad_colour = (torch.tensor(OFFICIAL_MEAN_255) / 255.0
                            if self.image_model.official_normalisation
                            else torch.tensor(OPENAI_MEAN))
        self._stitch = StitchCache()     # window-stitching operators by frame layout

    # --- identities -------------------------------------------------------------------------
    def text_encoder_id(self) -> str:
        return f"open_clip:{self._clip_id}"

    def model_id(self) -> str:
        pc = self.cfg.group("proxyclip")
        return (f"proxyclip|{self._clip_id}|{self._vfm_id}|beta={pc['beta']}|"
                f"gamma={pc['gamma']}|norm={pc['normalisation']}")

    # --- text -------------------------------------------------------------------------------------
    def _clip_tokenizer(self):
        return self._tokenizer

    # --- image ----------------------------------------------------------------------------------
    def resized_size(self, h: int, w: int) -> BoundedSize:
        """The short-side resize of an h x w frame, scaled down (aspect kept) until it
        needs at most ``max_windows`` sliding windows, or, without sliding windows, has at
        most ``max_resized_pixels`` pixels: every input shape costs at most that."""
        pc = self.cfg.group("proxyclip")
        nominal = short_side_size(h, w, pc["short_side"])
        if pc["sliding_window"]:
            crop, stride, limit = pc["crop_size"], pc["stride"], pc["max_windows"]

            def windows(rh: int, rw: int) -> int:
                rows, cols = window_grid(rh, rw, crop, stride)
                return rows * cols

            return capped((h, w), nominal, lambda rh, rw: windows(rh, rw) <= limit,
                          setting="proxyclip.max_windows", limit=limit, cost=windows,
                          unit="windows")
        limit = pc["max_resized_pixels"]
        return capped((h, w), nominal, lambda rh, rw: rh * rw <= limit,
                      setting="proxyclip.max_resized_pixels", limit=limit,
                      cost=lambda rh, rw: rh * rw, unit="pixels")

    def _bounded_layout(self, h: int, w: int):
        bounded = self.resized_size(h, w)
        rh, rw = bounded.size
        if self.cfg["proxyclip.sliding_window"]:
            windows = sliding_windows(rh, rw, self.cfg["proxyclip.crop_size"],
                                      self.cfg["proxyclip.stride"])
        else:
            windows = [(0, rh, 0, rw)]
        wh, ww = windows[0][1] - windows[0][0], windows[0][3] - windows[0][2]
        pad = centred_padding(wh, ww, self.image_model.pad_multiple)
        return (rh, rw), windows, pad, bounded.notes

    def window_layout(self, h: int, w: int):
        """(resized h, w), windows, padding of one window, for a frame of size h x w."""
        return self._bounded_layout(h, w)[:3]

    @torch.inference_mode()
    def _frame_crops(self, rgb: np.ndarray) -> dict:
        """The padded windows of one frame and the layout to stitch them back."""
        h0, w0 = rgb.shape[:2]
        (rh, rw), windows, pad, notes = self._bounded_layout(h0, w0)
        img = to_tensor(resize_rgb(rgb, (rh, rw)))
        crops = torch.stack([img[:, y1:y2, x1:x2] for y1, y2, x1, x2 in windows])
        crops = pad_with_colour(crops, pad, self._pad_colour)
        return {"size": (h0, w0), "resized": (rh, rw), "windows": windows, "pad": pad,
                "crops": crops, "notes": notes}

    @torch.inference_mode()
    def _window_features(self, frames: List[dict], timings: dict) -> List[torch.Tensor]:
        """Run the image model over the windows of all ``frames`` in shared batches of
        ``window_batch_size`` (windows of equal padded size only); one b x E x h x w
        tensor per frame. Each window's features do not depend on its batch mates
        (per-sample similarity mean), so this equals one frame at a time."""
        bs = self.cfg["proxyclip.window_batch_size"]
        out: List[List[torch.Tensor]] = [[] for _ in frames]
        groups: dict = {}
        for fi, fr in enumerate(frames):
            groups.setdefault(tuple(fr["crops"].shape[-2:]), []).append(fi)
        self.image_model.last_times = {}
        t_model = 0.0
        for members in groups.values():
            crops = torch.cat([frames[fi]["crops"] for fi in members])
            owner = [fi for fi in members for _ in range(frames[fi]["crops"].shape[0])]
            for i in range(0, crops.shape[0], bs):
                t1 = time.perf_counter()
                feats = self.backend(crops[i:i + bs])                    # b x E x h x w
                t_model += time.perf_counter() - t1
                for j in range(feats.shape[0]):
                    out[owner[i + j]].append(feats[j:j + 1])
        timings["image_model"] = t_model
        timings.update(self.image_model.last_times)
        return [torch.cat(f, 0) for f in out]

    def _logit_blocks(self, frame: dict, feats: torch.Tensor, emb: torch.Tensor, timings: dict,
                      scale: float = 1.0):
        """(stitch operator, S x (R gh) x (C gw) block matrices of window cosines): the
        window logits at the feature resolution for all synonyms (small), laid out for the
        operator, whose ``stitch(blocks[i:j])`` gives ``scale`` x logits at the input's size.
        Upsampling each window, stitching (mean over overlapping windows) and the resize to
        the input are one linear map per axis (``core/window_stitch.py``)."""
        t0 = time.perf_counter()
        low = torch.einsum("behw,se->bshw", feats, emb.to(feats.device, torch.float32))
        timings["text"] = timings.get("text", 0.0) + time.perf_counter() - t0
        stitch = self._stitch.get(self._stitch_layout(frame, low), scale, low.device)
        return stitch, stitch.block_matrix(low)

    def _logit_chunks(self, frame: dict, feats: torch.Tensor, emb: torch.Tensor,
                      chunk: int, timings: dict, scale: float = 1.0):
        """``scale`` x cosine logits k x H x W at the input's size, ``chunk`` synonyms at a
        time: two matrix products per chunk (``_logit_blocks``)."""
        stitch, blocks = self._logit_blocks(frame, feats, emb, timings, scale)
        for s0 in range(0, blocks.shape[0], chunk):
            yield stitch(blocks[s0:s0 + chunk])

    @staticmethod
    def _stitch_layout(frame: dict, low: torch.Tensor) -> Layout:
        (top, left) = frame["pad"][2], frame["pad"][0]
        return Layout(grid=tuple(low.shape[-2:]), padded=tuple(frame["crops"].shape[-2:]),
                      pad_top_left=(top, left), windows=tuple(frame["windows"]),
                      resized=frame["resized"], size=frame["size"])

    def _segment_embeddings(self, frame: dict, feats: torch.Tensor, panoptic: np.ndarray,
                            segments) -> dict:
        """Segment id -> the L2-normalised mean of the stitched dense CLIP features over the
        segment (the features the class logits are cosines of, so the embedding lives in the
        text space); through the frame's stitch operator, never at full resolution."""
        feats = feats.float()
        stitch = self._stitch.get(self._stitch_layout(frame, feats), 1.0, feats.device)
        means = stitch.segment_means(stitch.block_matrix(feats), panoptic, segments)
        rows = torch.nn.functional.normalize(means, dim=-1).cpu().numpy().astype(np.float32)
        return {seg.id: rows[i] for i, seg in enumerate(segments)}

    def _chunk_size(self, frame: dict, num_synonyms: int) -> int:
        # 4 Mi values (16 MiB) a chunk: at 640 x 480 that is 13 synonyms, which stays in
        # the last-level cache through the softmax passes; 8 Mi was 10 % slower here
        h0, w0 = frame["size"]
        return class_chunk(num_synonyms, h0 * w0, budget=1 << 22)

    @torch.inference_mode()
    def dense_logits(self, rgb: np.ndarray, embeddings: torch.Tensor,
                     timings: Optional[dict] = None) -> torch.Tensor:
        """Cosine logits S x H x W at the input's size (before logit_scale and softmax):
        the full volume, for analysis tools; ``predict`` streams it in chunks instead."""
        timings = {} if timings is None else timings
        frame = self._frame_crops(rgb)
        feats = self._window_features([frame], timings)[0]
        return torch.cat(list(self._logit_chunks(frame, feats, embeddings,
                                                 embeddings.shape[0], timings)), 0)

    def class_probabilities(self, logits: torch.Tensor, synonym_class: torch.Tensor,
                            num_classes: int) -> torch.Tensor:
        """S x H x W logits -> C x H x W probabilities: softmax over synonyms of
        logit_scale * logits, then the max over each class's synonyms."""
        return class_probabilities(logits * self.cfg["proxyclip.logit_scale"], synonym_class,
                                   num_classes)

    def _labels_alone(self, stitch, blocks: torch.Tensor, scores: bool,
                      confidence: bool) -> bool:
        """Whether this frame takes the bounded labels without a confidence: nothing needs
        the confidence (the caller, prob_thd) nor the volume; enough synonyms for the tile
        work to pay (``MIN_SYNONYMS``); on the CPU (an accelerator's full products are
        cheap and a per-tile loop would wait on it); and this machine's products give the
        tiles the full operator's bits for this layout (``TilePlan.exact``, checked once).
        With the confidence, the labels from the bounds plus one confidence pass measured
        0.7-1.1x the streamed pass (docs/benchmarks/cpu.md): not taken."""
        return (not (scores or confidence or self.cfg["prob_thd"] > 0)
                and blocks.shape[0] >= MIN_SYNONYMS and blocks.device.type == "cpu"
                and tile_plan(stitch).exact)

    @torch.inference_mode()
    def _finish(self, frame: dict, feats: torch.Tensor, vocab: VocabularyState, scores: bool,
                timings: dict, confidence: bool = True) -> Prediction:
        t0 = time.perf_counter()
        scale = self.cfg["proxyclip.logit_scale"]
        chunk = self._chunk_size(frame, int(vocab.embeddings.shape[0]))
        t_text0 = timings.get("text", 0.0)
        stitch, blocks = self._logit_blocks(frame, feats, vocab.embeddings, timings, scale)
        if self._labels_alone(stitch, blocks, scores, confidence):
            # labels from the synonyms that can win on each tile, bit-identical to the
            # argmax over all of them, and no confidence (core/bounded_labels.py)
            found = bounded_argmax(stitch, blocks, vocab.synonym_class)
            semantic, volume, conf = found.labels, None, None
            # synonym x tile pairs interpolated, of all: what the bounds saved
            counts = {"label_candidates": found.candidates, "label_pairs": found.pairs}
        else:
            # the confidence (or the volume) needs every synonym at every pixel anyway: one
            # streamed pass gives it with the labels
            chunks = (stitch(blocks[s0:s0 + chunk]) for s0 in range(0, blocks.shape[0], chunk))
            semantic, conf, volume = softmax_argmax(chunks, vocab.synonym_class,
                                                    vocab.num_classes, scores=scores)
            counts = {"label_full_argmax": 1}
        if conf is not None:
            semantic = apply_prob_thd(semantic, conf, self.cfg["prob_thd"])
        semantic_np = semantic.to(torch.int32).cpu().numpy()
        conf_np = conf.cpu().numpy() if conf is not None else None
        scores_np = volume.float().cpu().numpy() if volume is not None else None
        panoptic, segments = semantic_to_panoptic(
            semantic_np, conf_np, vocab.is_thing, self.cfg["proxyclip.min_thing_area"])
        timings["post"] = time.perf_counter() - t0 - (timings.get("text", 0.0) - t_text0)
        embeddings = None
        if self.embeddings_enabled:
            t1 = time.perf_counter()
            embeddings = self._segment_embeddings(frame, feats, panoptic, segments)
            timings["embeddings"] = time.perf_counter() - t1
        pred = self.make_prediction(semantic_np, conf_np, scores_np, panoptic, segments, vocab,
                                    timings, embeddings=embeddings, notes=frame["notes"])
        pred.counts.update(counts)
        return pred

    def predict(self, rgb: np.ndarray, vocab: VocabularyState, scores: bool = False, *,
                confidence: bool = True) -> Prediction:
        return self.predict_batch([rgb], vocab, scores=scores, confidence=confidence)[0]

    def predict_batch(self, rgbs: List[np.ndarray], vocab: VocabularyState,
                      scores: bool = False, *, confidence: bool = True) -> List[Prediction]:
        """Windows of all frames share the image model's batches; the post-processing
        runs per frame. Stage timings are per batch (each frame reports the shared
        image-model time). ``confidence=False``: ``Prediction.confidence`` is None and the
        segments' scores NaN where the bounded labels ran (``_labels_alone``); a small
        vocabulary's full argmax brings the confidence along and keeps it."""
        t_start = time.perf_counter()
        t0 = time.perf_counter()
        frames = [self._frame_crops(rgb) for rgb in rgbs]
        shared = {"preprocess": time.perf_counter() - t0}
        feats = self._window_features(frames, shared)
        preds = []
        for frame, f in zip(frames, feats):
            preds.append(self._finish(frame, f, vocab, scores, dict(shared), confidence))
        total = time.perf_counter() - t_start
        for p in preds:
            p.timings["total"] = total
        return preds

    def model_facts(self) -> dict:
        pc = self.cfg.group("proxyclip")
        return {"clip_model": pc["clip_model"], "vfm_model": pc["vfm_model"],
                "sliding_window": pc["sliding_window"], "crop_size": pc["crop_size"],
                "stride": pc["stride"], "short_side": pc["short_side"],
                "max_windows": pc["max_windows"], "max_resized_pixels": pc["max_resized_pixels"]}

    def weights_identity(self) -> dict:
        return {"clip": self._clip_id, "vfm": self._vfm_id}


__all__ = ["ProxyCLIPEngine", "ProxyCLIPImageModel", "proxy_attention", "resize_pos_grid"]
