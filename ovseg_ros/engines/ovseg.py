"""OVSeg: two-stage open-vocabulary segmentation (mask proposals, then mask-adapted CLIP).

Stage 1 (``engine.image_model``, vocabulary-free, models/ovseg.py): Swin-B ->
MaskFormer head -> 100 class-agnostic mask proposals with one CLIP-space
embedding each. Their class scores: softmax over K+1 of 100 * cos(embedding,
text) with the learnt "no object" embedding as row K, then that column dropped.

Stage 2 (``engine.crop_model``, models/mask_adapted_clip.py): every proposal
with at least one pixel above ``ovseg.mask_threshold`` becomes a crop of the
resized image (tight box of the binary mask, background filled with CLIP's mean
colour, normalised, bicubic to 224 x 224; its mask nearest to 224 x 224); all
crops of a frame go through the mask-prompted CLIP ViT as one batch. CLIP
scores: softmax over the K classes of 100 * cos (the no-object column dropped
before the softmax).

Ensemble (reference ``OVSeg.semantic_inference``): head^(1-w) * clip^w for
proposals with a crop, head^(1-w) for the others (w = ``ovseg.clip_ensemble_weight``;
w = 0 means CLIP scores only, over the cropped proposals, as in the reference).
Semantic scores: sum over proposals of score x sigmoid(mask) at the resized
image's size, bilinear to the input size; the label is the argmax. The
reference has no panoptic output in this configuration: panoptic ids come from
the project's semantic -> panoptic heuristic (core/panoptic_heuristic.py).

Zero crops (no proposal above the threshold): as the reference's own branch for that
case, the head's scores alone, head^(1-w), over every proposal's soft mask; with w = 0
(CLIP only) there are no scores and the frame is unlabelled.

Input normalisation: the reference's arithmetic, (k - mean) / std on the 0..255 values
(``models/ovseg.normalise_unit_image``); the mask crops amplify a 1-ulp difference.

Synonyms: each class takes the largest logit among its synonyms, in both stages.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..backends.base import ExportSpec
from ..config import Config, ConfigError
from ..core.postprocess import apply_prob_thd, mask_semantic
from ..core.resize_bounds import bounded_resize
from ..core.stage_timing import StageTimer, stage_timer
from ..core.panoptic_heuristic import semantic_to_panoptic
from ..core.types import UNLABELED, Prediction, VocabularyState
from ..models.classifier import class_max
from ..models.mask_adapted_clip import CLIPCropModel, add_mask_embedding, crop_size_of
from ..models.maskformer_head import head_spec
from ..models.ovseg import OVSegWeights, ProposalImageModel, load_ovseg_checkpoint
from ..models.swin import swin_spec
from ..registry import register_engine
from ..weights import RANDOM_SEED, clip_architecture, file_fingerprint
from ..weights.sources import CheckpointFile, Release, WeightsNeed
from .base import Engine, OpenClipText, graph_settings

#: the reference's fixed cosine temperature in both stages (ClipAdapter.get_sim_logits)
TEMPERATURE = 100.0
#: semantic scores are built in chunks of classes holding at most this many values
_CLASS_CHUNK_BUDGET = 1 << 24
#: the key prefixes of a released file that inference reads (the rest, ``criterion.*``,
#: is the training loss's state)
INFERENCE_PREFIXES = ("backbone.", "sem_seg_head.", "clip_adapter.")
#: the training state of a released file: skipped at start-up, where any other key outside
#: the layout is an error (``convert`` keeps the INFERENCE_PREFIXES instead)
TRAINING_ONLY_PREFIXES = ("criterion.",)


# --- the rules of the reference, as plain functions (tested one by one) ----------------------
def mask_boxes(bin_masks: torch.Tensor) -> torch.Tensor:
    """N x H x W bool -> N x 4 int64 (x1, y1, x2, y2) tight boxes, x2/y2 exclusive
    (detectron2's BitMasks.get_bounding_boxes); all-zero masks give (0, 0, 0, 0)."""
    n, h, w = bin_masks.shape
    cols = bin_masks.any(1)                       # N x W
    rows = bin_masks.any(2)                       # N x H
    ar_w = torch.arange(w, device=bin_masks.device)
    ar_h = torch.arange(h, device=bin_masks.device)
    big = max(h, w) + 1
    x1 = torch.where(cols, ar_w, big).amin(1)
    x2 = torch.where(cols, ar_w, -1).amax(1) + 1
    y1 = torch.where(rows, ar_h, big).amin(1)
    y2 = torch.where(rows, ar_h, -1).amax(1) + 1
    boxes = torch.stack([x1, y1, x2, y2], 1)
    empty = ~cols.any(1)
    return torch.where(empty[:, None], torch.zeros_like(boxes), boxes)


def segment_embeddings(crop_embed: torch.Tensor, masks: torch.Tensor, panoptic: np.ndarray,
                       segments) -> Dict[int, np.ndarray]:
    """Segment id -> L2-normalised mean of the masked-crop CLIP embeddings (N x D, rows of
    the N cropped proposals, masks N x h x w their probabilities), each weighted by how much
    of its mask falls on the segment. The segments come from the per-pixel classes, not from
    single proposals, so a segment pools the proposals that cover it."""
    h, w = masks.shape[-2:]
    sy, sx = h / panoptic.shape[0], w / panoptic.shape[1]
    if panoptic.shape != (h, w):
        panoptic = cv2.resize(panoptic, (w, h), interpolation=cv2.INTER_NEAREST)
    if not segments:
        return {}
    unit = F.normalize(crop_embed.float(), dim=-1)
    flat = masks.float()
    weights = []
    for seg in segments:
        # the segment's box at the proposals' resolution (1 px of slack for the rounding)
        x, y, bw, bh = seg.bbox
        x0, y0 = max(0, int(x * sx) - 1), max(0, int(y * sy) - 1)
        x1, y1 = min(w, int(np.ceil((x + bw) * sx)) + 1), min(h, int(np.ceil((y + bh) * sy)) + 1)
        m = torch.from_numpy(panoptic[y0:y1, x0:x1] == seg.id).to(flat.device, flat.dtype)
        if float(m.sum()) > 0:
            weights.append(flat[:, y0:y1, x0:x1].reshape(flat.shape[0], -1) @ m.flatten())
        else:   # lost at the proposals' resolution: the weights at the box centre
            cy, cx = min(h - 1, int((y + bh / 2) * sy)), min(w - 1, int((x + bw / 2) * sx))
            weights.append(flat[:, cy, cx])
    pool = torch.stack(weights)                                   # S x N
    empty = pool.sum(1, keepdim=True) <= 0
    # a segment no proposal covers at all: the mean crop embedding, not a zero vector
    pool = torch.where(empty, torch.ones_like(pool), pool)
    rows = F.normalize(pool @ unit, dim=-1).cpu().numpy().astype(np.float32)
    return {seg.id: rows[i] for i, seg in enumerate(segments)}


def clip_fill_and_norm(dtype=torch.float32, device="cpu"):
    """(fill 3, mean 1x3x1x1, std 1x3x1x1) on the 0..255 scale, rounded as the reference
    rounds them: the fill from float64 products, mean/std as float32 products."""
    from ..models.ovseg import CLIP_MEAN, CLIP_STD

    fill = torch.tensor([255.0 * c for c in CLIP_MEAN], dtype=dtype, device=device)
    mean = torch.tensor(CLIP_MEAN, device=device).reshape(1, 3, 1, 1) * 255.0
    std = torch.tensor(CLIP_STD, device=device).reshape(1, 3, 1, 1) * 255.0
    return fill, mean.to(dtype), std.to(dtype)


def masked_crops(image: torch.Tensor, bin_masks: torch.Tensor, size: int, fill: torch.Tensor,
                 mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The reference's crops (MaskFormerClipAdapter._preprocess_image + crop_with_mask).

    image 3 x H x W float on 0..255 (the resized frame), bin_masks N x H x W bool (each
    with at least one pixel) -> N x 4 x size x size: per mask, the tight box of the image
    with pixels outside the mask set to ``fill``, normalised ((x - mean) / std), bicubic
    to size x size (align_corners False); channel 3 the box's mask, nearest to size.
    """
    boxes = mask_boxes(bin_masks).tolist()
    out = []
    for (x1, y1, x2, y2), m in zip(boxes, bin_masks):
        region_mask = m[None, y1:y2, x1:x2].to(image.dtype)
        region = image[:, y1:y2, x1:x2] * region_mask + \
            (1 - region_mask) * fill.view(3, 1, 1).expand(3, y2 - y1, x2 - x1)
        region = (region[None] - mean) / std
        region = F.interpolate(region, size=(size, size), mode="bicubic", align_corners=False)
        region_mask = F.interpolate(region_mask[None], size=(size, size), mode="nearest")
        out.append(torch.cat([region, region_mask], 1))
    if not out:
        return image.new_zeros((0, 4, size, size))
    return torch.cat(out, 0)


def head_probabilities(class_embed: torch.Tensor, text: torch.Tensor, no_object: torch.Tensor,
                       synonym_class: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Q x D query embeddings -> Q x K: softmax over [K classes (max over synonyms), no
    object] of 100 * cos, the no-object column dropped."""
    q = F.normalize(class_embed.float(), dim=-1)
    syn = TEMPERATURE * q @ text.t()
    void = TEMPERATURE * q @ F.normalize(no_object.float(), dim=-1).t()
    logits = torch.cat([class_max(syn, synonym_class, num_classes), void], -1)
    return logits.softmax(-1)[:, :-1]


def clip_probabilities(clip_embed: torch.Tensor, text: torch.Tensor,
                       synonym_class: torch.Tensor, num_classes: int) -> torch.Tensor:
    """N x D (normalised) crop embeddings -> N x K: softmax over the K classes (max over
    synonyms) of 100 * cos; the no-object column is dropped before the softmax."""
    syn = TEMPERATURE * clip_embed.float() @ text.t()
    return class_max(syn, synonym_class, num_classes).softmax(-1)


def ensemble(head: torch.Tensor, clip: torch.Tensor, valid: torch.Tensor, weight: float
             ) -> torch.Tensor:
    """head^(1-w) * clip^w for the queries with a crop (``valid``), head^(1-w) for the
    others (the reference fills their CLIP scores with ones). ``clip`` has one row per
    valid query, in query order."""
    full = head.new_ones(head.shape)
    full[valid] = clip
    return head.pow(1.0 - weight) * full.pow(weight)


@register_engine("ovseg")
class OVSegEngine(OpenClipText, Engine):
    name = "ovseg"
    default_templates = "vild14"
    group = "ovseg"
    checkpoint_setting = "ovseg.checkpoint"
    docs = "docs/ovseg.md"
    releases = (
        Release("ovseg", "ovseg_swinbase_vitL14_ft_mpt.pth", "OVSeg Swin-B + CLIP ViT-L/14",
                "1cn-ohxgXDrDfkzC1QdO-fi8IjbjXmgKy",
                "github.com/facebookresearch/ov-seg GETTING_STARTED.md", md5_prefix="526080"),
        Release("ovseg", "ovseg_R101c_vitB16_ft_mpt.pth", "OVSeg R101c + CLIP ViT-B/16",
                "1ZmeFMEkhuLqaWkhz4t4IlQ8YflrYja8q",
                "github.com/facebookresearch/ov-seg GETTING_STARTED.md", md5_prefix="c746f4"),
    )
    #: bf16/fp16 runs both image graphs (Swin + head, the crops' CLIP) under autocast
    precision_stages = (("preprocess", False), ("proposals", True), ("crops", False),
                        ("clip", True), ("ensemble", False), ("post", False))

    @classmethod
    def weights_needs(cls, cfg: Config) -> Tuple[WeightsNeed, ...]:
        """The released checkpoint alone: Swin, head and the fine-tuned CLIP (text tower
        included) all come from it."""
        return (CheckpointFile(cls.checkpoint_setting),)

    def build(self, checkpoint: Optional[Path]) -> None:
        cfg = self.cfg
        self.clip_model_name = cfg["ovseg.clip_model"]
        if checkpoint is None:
            with self.seeded():
                self.weights = self._build(cfg)
                # random mask prompts (the reference starts them at zero, which would make
                # the prompt invisible in random-weight tests)
                with torch.no_grad():
                    emb = self.weights.clip_adapter.clip_model.visual.mask_embedding
                    emb.normal_(std=emb.shape[-1] ** -0.5)
            self._weights_id = f"random:{RANDOM_SEED}"
        else:
            self.weights = self._build(cfg)
            load_ovseg_checkpoint(checkpoint, self.weights, setting="ovseg.checkpoint",
                                  keep=lambda key: not key.startswith(TRAINING_ONLY_PREFIXES))
            self._weights_id = f"file:{file_fingerprint(checkpoint)}"
        self.weights.eval().requires_grad_(False).to(self.device)
        w = self.weights
        self.clip_model = w.clip_adapter.clip_model
        self.crop_size = crop_size_of(self.clip_model.visual)
        import open_clip

        self.tokenizer = open_clip.get_tokenizer(self.clip_model_name)
        self.image_model = ProposalImageModel(w.backbone, w.sem_seg_head).eval().to(self.device)
        self.crop_model = CLIPCropModel(self.clip_model.visual).eval().to(self.device)
        settings = graph_settings(cfg, self.group)
        self.backend = self.add_backend("image", ExportSpec(
            self.image_model, model_id=self._model_id(), graph_settings=settings))
        # all crops of a frame in one batch: up to one per query
        self.crop_backend = self.add_backend("crops", ExportSpec(
            self.crop_model, model_id=self._model_id() + "-clip", graph_settings=settings,
            input_channels=self.crop_model.input_channels), max_batch=cfg["ovseg.num_queries"])

    # --- construction -------------------------------------------------------------------
    @staticmethod
    def _clip(name: str, meta: bool) -> torch.nn.Module:
        """open_clip's architecture ``name`` without pretrained weights (they all come
        from the OVSeg checkpoint); on the meta device for the layout."""
        return clip_architecture(name, key_prefix="ovseg", meta=meta)

    @classmethod
    def _build(cls, cfg: Config, meta: bool = False) -> OVSegWeights:
        try:
            swin = swin_spec(cfg["ovseg.swin_model"])
        except ValueError as exc:
            raise ConfigError(f"config key 'ovseg.swin_model': {exc}") from exc
        clip_model = cls._clip(cfg["ovseg.clip_model"], meta)
        try:
            add_mask_embedding(clip_model.visual, cfg["ovseg.mask_prompt_depth"])
        except (ValueError, AttributeError) as exc:
            raise ConfigError(f"config key 'ovseg.clip_model': {cfg['ovseg.clip_model']!r} "
                              f"cannot be OVSeg's mask-adapted CLIP: {exc}") from exc
        embed_dim = int(clip_model.text_projection.shape[-1])
        try:
            head = head_spec(cfg["ovseg.head_size"], swin.channels, embed_dim,
                             cfg["ovseg.num_queries"])
        except ValueError as exc:
            raise ConfigError(f"config key 'ovseg.head_size': {exc}") from exc
        return OVSegWeights(swin, head, clip_model)

    @classmethod
    def checkpoint_layout(cls, cfg: Config) -> Dict[str, Tuple[int, ...]]:
        """Inference keys of the released file and their shapes, from this engine's modules
        built on the meta device (no weights read, no memory allocated)."""
        with torch.device("meta"):
            weights = cls._build(cfg, meta=True)
        return {k: tuple(v.shape) for k, v in weights.state_dict().items()}

    @classmethod
    def is_inference_key(cls, key: str) -> bool:
        """Whether ``convert`` keeps this key of a released training file (everything
        but the training loss's ``criterion.*``)."""
        return key.startswith(INFERENCE_PREFIXES)

    def _model_id(self) -> str:
        return (f"ovseg-{self.cfg['ovseg.swin_model']}-{self.cfg['ovseg.head_size']}-"
                f"{self.clip_model_name}-q{self.cfg['ovseg.num_queries']}-{self._weights_id}")

    # --- text ---------------------------------------------------------------------------
    def text_encoder_id(self) -> str:
        # the text tower comes from the OVSeg checkpoint (fine-tuned CLIP), not a tag
        return f"ovseg|{self.clip_model_name}|{self._weights_id}"

    # encode_prompts (OpenClipText): the mask prompts are on the image side only, the text
    # tower is open_clip's own

    # --- stages -------------------------------------------------------------------------
    def preprocess(self, rgb: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
        """HxWx3 uint8 -> (3 x h x w float on 0..255: the resized frame the crops are cut
        from, 1 x 3 x h x w in [0, 1]: the proposal graph's input); the resize is
        detectron2's ResizeShortestEdge (PIL bilinear on uint8)."""
        from PIL import Image

        h, w = rgb.shape[:2]
        nh, nw = bounded_resize(self.cfg, "ovseg", h, w).size
        if (nh, nw) != (h, w):
            rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR))
        x = torch.from_numpy(np.array(rgb, copy=True)).to(self.device)
        x = x.permute(2, 0, 1)[None].float()
        return x[0], x.div(255.0)

    def proposals(self, x: torch.Tensor, timer: StageTimer) -> Tuple[torch.Tensor, torch.Tensor]:
        timed = bool(getattr(self.backend, "eager", False))
        with stage_timer(timer if timed else None), torch.no_grad():
            mask_logits, class_embed = self.backend(x)
        if not timed:
            timer("proposals")
        return mask_logits.float(), class_embed.float()

    def mask_probabilities(self, mask_logits: torch.Tensor, resized: Tuple[int, int]
                           ) -> torch.Tensor:
        """Q x h4 x w4 logits -> Q x h x w sigmoid at the resized frame's size (bilinear to
        the padded input, padding cropped)."""
        hp, wp = mask_logits.shape[-2] * 4, mask_logits.shape[-1] * 4
        x = F.interpolate(mask_logits[None], size=(hp, wp), mode="bilinear", align_corners=False)
        return x[0, :, :resized[0], :resized[1]].sigmoid()

    def crops(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """N x 4 x S x S crop batch for these binary masks (see masked_crops)."""
        adapter = self.weights.clip_adapter
        fill, _, _ = clip_fill_and_norm(image.dtype, image.device)
        return masked_crops(image, masks, self.crop_size, fill,
                            adapter.pixel_mean.to(image.dtype), adapter.pixel_std.to(image.dtype))

    def clip_embeddings(self, crops: torch.Tensor) -> torch.Tensor:
        """N x 4 x S x S -> N x D normalised CLIP embeddings, the whole batch at once."""
        with torch.no_grad():
            return self.crop_backend(crops).float()

    def text_classifier(self, vocab: VocabularyState) -> torch.Tensor:
        return vocab.embeddings.to(self.device, torch.float32)

    # --- inference ------------------------------------------------------------------------
    def predict(self, rgb: np.ndarray, vocab: VocabularyState, scores: bool = False
                ) -> Prediction:
        t_start = time.perf_counter()
        timer = StageTimer(self.device)
        timer.start()
        image, x = self.preprocess(rgb)
        resized = tuple(image.shape[-2:])
        timer("preprocess")
        mask_logits, class_embed = self.proposals(x, timer)
        with torch.no_grad():
            masks = self.mask_probabilities(mask_logits[0], resized)       # Q x h x w
            text = self.text_classifier(vocab)
            k = vocab.num_classes
            head = head_probabilities(class_embed[0], text,
                                      self.weights.clip_adapter.non_object_embedding,
                                      vocab.synonym_class, k)
            bin_masks = masks > self.cfg["ovseg.mask_threshold"]
            valid = bin_masks.flatten(1).any(1)
            n_valid = int(valid.sum())
            weight = self.cfg["ovseg.clip_ensemble_weight"]
            crop_embed = masks_of_crops = None
            if n_valid == 0:
                timer("crops")
                if weight == 0:
                    # CLIP scores only, and no proposal has any: every score is 0 (the
                    # reference's argmax then names class 0; here nothing is labelled)
                    pred = self._unlabelled(rgb, vocab, scores, timer, t_start)
                    pred.counts["crops"] = 0
                    return pred
                # the reference's branch for "no crop" (clip_cls is None): every proposal
                # keeps CLIP's neutral score 1, i.e. head^(1-w) over all proposals
                clip = head.new_zeros((0, k))
            else:
                batch = self.crops(image, bin_masks[valid])
                masks_of_crops = masks[valid]              # the crops' proposals, N x h x w
                timer("crops")
                crop_embed = self.clip_embeddings(batch)
                clip = clip_probabilities(crop_embed, text, vocab.synonym_class, k)
            timer("clip")
            if weight > 0:
                mask_cls = ensemble(head, clip, valid, weight)
            else:
                # the reference's CLIP-only branch: CLIP scores over the cropped proposals
                mask_cls, masks = clip, masks[valid]
            timer("ensemble")
            semantic, conf, volume = self._semantic(mask_cls, masks, rgb.shape[:2], scores)
        timer("post")
        panoptic, segments = semantic_to_panoptic(semantic, conf, vocab.is_thing,
                                                  self.cfg["ovseg.min_thing_area"])
        timer("panoptic")
        embeddings = None
        if self.embeddings_enabled:
            # segments are embedded through the CLIP crops; without any crop there is none
            embeddings = ({} if crop_embed is None else
                          segment_embeddings(crop_embed, masks_of_crops, panoptic, segments))
            timer("embeddings")
        timings = dict(timer.times)
        timings["total"] = time.perf_counter() - t_start
        pred = self.make_prediction(semantic, conf, volume, panoptic, segments, vocab, timings,
                                    embeddings=embeddings,
                                    notes=bounded_resize(self.cfg, "ovseg", *rgb.shape[:2]).notes)
        pred.counts["crops"] = n_valid   # proposals sent to CLIP (benchmark, reference check)
        return pred

    def _semantic(self, mask_cls: torch.Tensor, masks: torch.Tensor, original: Tuple[int, int],
                  want_scores: bool):
        """(labels H x W int32, confidence H x W float32, scores K x H x W or None).

        The reference sums score x mask at the resized frame's size and resizes the
        K-class volume bilinearly to the input size; bilinear resizing is linear, so
        resizing each query's mask first gives the same scores (to rounding) and lets
        the shared class-chunked inference (core/postprocess.py) avoid the volume."""
        h, w = original
        same = tuple(masks.shape[-2:]) == (h, w)

        def query_masks(i0: int, i1: int) -> torch.Tensor:
            m = masks[i0:i1]
            if same:
                return m
            return F.interpolate(m[None], size=(h, w), mode="bilinear", align_corners=False)[0]

        sem = mask_semantic(mask_cls, query_masks, (h, w), scores=want_scores,
                            budget=_CLASS_CHUNK_BUDGET)
        labels = apply_prob_thd(sem.labels, sem.confidence, self.cfg["prob_thd"])
        return (labels.to(torch.int32).cpu().numpy(), sem.confidence.float().cpu().numpy(),
                sem.scores.float().cpu().numpy() if sem.scores is not None else None)

    def _unlabelled(self, rgb, vocab, want_scores, timer, t_start) -> Prediction:
        h, w = rgb.shape[:2]
        semantic = np.full((h, w), UNLABELED, np.int32)
        conf = np.zeros((h, w), np.float32)
        volume = np.zeros((vocab.num_classes, h, w), np.float32) if want_scores else None
        timings = dict(timer.times)
        timings["total"] = time.perf_counter() - t_start
        return self.make_prediction(semantic, conf, volume, np.zeros((h, w), np.int32), [], vocab,
                                timings, notes=bounded_resize(self.cfg, "ovseg", h, w).notes)

    def model_facts(self) -> dict:
        return {"swin_model": self.cfg["ovseg.swin_model"], "clip_model": self.clip_model_name,
                "num_queries": self.cfg["ovseg.num_queries"]}

    def weights_identity(self) -> dict:
        return {"checkpoint": self._weights_id}


__all__ = ["OVSegEngine", "mask_boxes", "masked_crops", "clip_fill_and_norm", "segment_embeddings",
           "head_probabilities", "clip_probabilities", "ensemble", "TEMPERATURE"]
