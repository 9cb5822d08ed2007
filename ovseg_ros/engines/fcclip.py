"""FC-CLIP: panoptic open-vocabulary segmentation on a frozen ConvNeXt CLIP.

Image path (``engine.image_model``, vocabulary-free, see models/fcclip_head.py):
CLIP trunk res2..res5 -> Mask2Former pixel decoder (deformable attention) ->
masked transformer decoder (250 queries) -> mask logits, query class
embeddings, and CLIP embeddings mask-pooled from res5.

Vocabulary path (here, per frame, cheap): cosine of both embeddings with the
text classifier (max over synonyms, learned void embedding appended), the
geometric ensemble of in-vocabulary and out-of-vocabulary probabilities
(alpha for classes seen in COCO-panoptic training, beta for unseen ones),
times (1 - P(void)). Then semantic and panoptic merging
(core/panoptic_merge.py) at the input image's resolution.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..backends.base import ExportSpec
from ..config import Config, ConfigError
from ..core.class_names import COCO_STUFF_NAMES, COCO_THING_NAMES
from ..core.panoptic_merge import merge_segments_chunked, select_queries
from ..core.postprocess import MaskSemantic, apply_prob_thd, mask_semantic
from ..core.stage_timing import StageTimer, stage_timer
from ..core.resize_bounds import bounded_resize, shortest_edge
from ..core.types import Prediction, VocabularyState
from ..models.checkpoint import CLIP_PREFIX, layout_of, load_reference_checkpoint
from ..models.fcclip_head import (BF16_SCOPE, FCCLIPHeadWeights, FCCLIPImageModel, HeadSpec,
                                  check_convnext_visual)
from ..models.classifier import class_max, cosine_logits
from ..models.deformable_attention import set_sampling
from ..registry import register_engine
from ..weights import RANDOM_SEED, clip_architecture, create_clip, file_fingerprint
from ..weights.sources import CheckpointFile, OpenClipWeights, Release, WeightsNeed
from .base import Engine, OpenClipText, graph_settings

#: mask logits are upsampled in chunks of queries holding at most this many values
_UPSAMPLE_BUDGET = 1 << 24


def resize_shortest_edge(h: int, w: int, short: int, max_size: int) -> Tuple[int, int]:
    """detectron2's ResizeShortestEdge size: short side -> ``short``, long side capped at
    ``max_size``, rounded half up; no side below 1 pixel (core/resize_bounds.py)."""
    return shortest_edge(h, w, short, max_size, setting="max_size").size


def is_seen_class(synonyms, seen_names=None) -> bool:
    """A class counts as seen in training when any synonym is a COCO-panoptic name."""
    if seen_names is None:
        return any(s.lower() in COCO_THING_NAMES or s.lower() in COCO_STUFF_NAMES
                   for s in synonyms)
    return any(s.lower() in seen_names for s in synonyms)


def geometric_ensemble(in_logits: torch.Tensor, out_logits: torch.Tensor, seen: torch.Tensor,
                       alpha: float, beta: float) -> torch.Tensor:
    """FC-CLIP's ensemble of the in-vocabulary (``in_logits``) and CLIP (``out_logits``)
    class logits, ... x (K+1) each with void last -> ... x (K+1) log-probabilities:

        cls  = log(p_in^(1-w) * p_out^w),  p = softmax over the K classes (void dropped),
               w = alpha for seen classes, beta for unseen ones
        out  = log([softmax(cls) * (1 - P_in(void)), P_in(void)] + 1e-8)

    The reference forms the product of probabilities and then takes its log; here the
    same quantity is (1-w)*log_softmax + w*log_softmax, which stays finite where a
    probability underflows in fp32 (cosine logits scaled by 100 differ by up to 200,
    and exp(-200) is 0 in fp32): the reference gets -inf there, and NaN from
    -inf * 0 when it masks seen/unseen terms; identical otherwise.
    """
    log_in = in_logits[..., :-1].log_softmax(-1)
    log_out = out_logits[..., :-1].log_softmax(-1)
    w = torch.where(seen.to(log_in.device), torch.tensor(alpha, dtype=log_in.dtype),
                    torch.tensor(beta, dtype=log_in.dtype))
    cls = log_in * (1 - w) + log_out * w
    # void filtering: the in-vocabulary head's P(void), over all K+1 columns
    p_void = in_logits.softmax(-1)[..., -1:]
    probs = torch.cat([cls.softmax(-1) * (1.0 - p_void), p_void], -1)
    return torch.log(probs + 1e-8)


#: keys of a released training file that are training state: the loss, MAFT+'s teacher
TRAINING_ONLY_PREFIXES = ("criterion.", "backbone_t.")


@register_engine("fcclip")
class FCClipEngine(OpenClipText, Engine):
    name = "fcclip"
    default_templates = "vild14"
    #: config key group of this engine
    group = "fcclip"
    checkpoint_setting = "fcclip.checkpoint"
    docs = "docs/fcclip.md"
    releases = (
        Release("fcclip", "fcclip_cocopan.pth", "FC-CLIP ConvNeXt-Large, COCO panoptic",
                "1-91PIns86vyNaL3CzMmDD39zKGnPMtvj",
                "github.com/bytedance/fc-clip README, model zoo"),
    )
    #: whether the image path also returns dense CLIP embeddings (MAFT+)
    dense_output = False
    #: bf16/fp16: only the ConvNeXt trunk's matmuls (FCCLIPImageModel.set_weight_dtype)
    precision_stages = (("backbone", True), ("pixel_decoder", False),
                        ("transformer_decoder", False), ("clip_pool", False),
                        ("classify", False), ("post", False))

    @classmethod
    def weights_needs(cls, cfg: Config) -> Tuple[WeightsNeed, ...]:
        """The open_clip CLIP (tag or file) and the engine's checkpoint (the head)."""
        g = cls.group
        return (OpenClipWeights(f"{g}.clip_model", f"{g}.clip_pretrained", f"{g}.clip_checkpoint"),
                CheckpointFile(cls.checkpoint_setting))

    def build(self, checkpoint: Optional[Path]) -> None:
        cfg, g = self.cfg, self.group
        loaded = create_clip(cfg[f"{g}.clip_model"], cfg[f"{g}.clip_pretrained"],
                             cfg[f"{g}.clip_checkpoint"], random_init=cfg["random_init"],
                             weights_dir=cfg["weights_dir"], key_prefix=g)
        self.clip_model = loaded.model
        self._text_id = loaded.identity
        self.clip_model_name = cfg[f"{g}.clip_model"]
        self.spec = self._head_spec(self.clip_model, cfg)
        self.head = self._load_head_weights(checkpoint)
        for module in (self.clip_model, self.head):
            module.eval().requires_grad_(False).to(self.device)
        import open_clip

        self.tokenizer = open_clip.get_tokenizer(self.clip_model_name)
        self.image_model = FCCLIPImageModel(self.clip_model.visual, self.head,
                                            dense_output=self.dense_output,
                                            **self._image_model_options(cfg)).eval()
        self.image_model.to(self.device)
        set_sampling(self.image_model, cfg[f"{g}.deformable_sampling"])
        # cast_weights: an eager bf16 backend stores the ConvNeXt trunk's weights in bf16
        # once; the head stays fp32 (FCCLIPImageModel.set_weight_dtype)
        export = ExportSpec(self.image_model, model_id=self._model_id(),
                            graph_settings=graph_settings(cfg, g),
                            cast_weights=self.image_model.set_weight_dtype)
        self.backend = self.add_backend("image", export)
        self._seen_cache: Tuple[int, Optional[torch.Tensor]] = (-1, None)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def _head_spec(cls, clip_model: torch.nn.Module, cfg: Config) -> HeadSpec:
        g = cls.group
        try:
            channels = check_convnext_visual(clip_model.visual, cfg[f"{g}.clip_model"])
        except ValueError as exc:
            raise ConfigError(f"config key '{g}.clip_model': {exc}") from exc
        return HeadSpec(in_channels=channels,
                        clip_embedding_dim=int(clip_model.text_projection.shape[-1]),
                        num_queries=cfg[f"{g}.num_queries"])

    @classmethod
    def _make_head(cls, spec: HeadSpec, cfg: Config) -> torch.nn.Module:
        return FCCLIPHeadWeights(spec)

    @classmethod
    def _image_model_options(cls, cfg: Config) -> dict:
        """Extra keyword arguments of FCCLIPImageModel for this engine."""
        return {}

    def _build_head(self) -> torch.nn.Module:
        return self._make_head(self.spec, self.cfg)

    # --- released checkpoint (docs/architecture.md, "Released checkpoints") -----------
    @classmethod
    def is_inference_key(cls, key: str) -> bool:
        """Whether ``convert`` keeps this key of a released training file (the head;
        FC-CLIP's frozen CLIP copy equals the open_clip weights and is dropped, and so
        is the training state)."""
        return not key.startswith(TRAINING_ONLY_PREFIXES + (CLIP_PREFIX,))

    @classmethod
    def checkpoint_layout(cls, cfg: Config) -> Dict[str, Tuple[int, ...]]:
        """Inference keys of the released file and their shapes, from this engine's modules
        built on the meta device (no weights read, no memory allocated)."""
        g = cls.group
        with torch.device("meta"):
            clip_model = clip_architecture(cfg[f"{g}.clip_model"], key_prefix=g)
            head = cls._make_head(cls._head_spec(clip_model, cfg), cfg)
        return layout_of(head, clip_model, visual=cls.dense_output)

    def _seeded_head(self) -> torch.nn.Module:
        with self.seeded():
            return self._build_head()

    def _load_head_weights(self, path: Optional[Path]) -> torch.nn.Module:
        if path is None:
            self._head_id = f"random:{RANDOM_SEED}"
            return self._seeded_head()
        g = self.group
        head = self._build_head()
        report = load_reference_checkpoint(path, head, self.clip_model,
                                           setting=f"{g}.checkpoint",
                                           layout=self.checkpoint_layout(self.cfg),
                                           is_inference_key=self.is_inference_key)
        self._head_id = f"file:{file_fingerprint(path)}"
        if report.text_overridden:
            self._text_id += f"|{self._head_id}"
        return head

    def _model_id(self) -> str:
        sampling = self.cfg[f"{self.group}.deformable_sampling"]
        # exported graphs of the two sampling forms differ (GridSample per level or stacked)
        order = "" if sampling == "gather" else f"-{sampling}"
        return (f"{self.name}-{self.clip_model_name}-q{self.spec.num_queries}{order}-"
                f"{self._head_id}")

    # --- text ---------------------------------------------------------------------------
    def text_encoder_id(self) -> str:
        return self._text_id

    # --- inference ------------------------------------------------------------------------
    def _seen_mask(self, vocab: VocabularyState) -> torch.Tensor:
        version, mask = self._seen_cache
        if version != vocab.version or mask is None or mask.numel() != vocab.num_classes:
            mask = torch.tensor([is_seen_class(s) for s in vocab.synonyms], dtype=torch.bool,
                                device=self.device)
            self._seen_cache = (vocab.version, mask)
        return mask

    def _classifier(self, vocab: VocabularyState) -> torch.Tensor:
        """Text rows (S x D, normalised) with the normalised void embedding appended."""
        text = vocab.embeddings.to(self.device, torch.float32)
        void = F.normalize(self.head.void_embedding.weight.float(), dim=-1)
        return torch.cat([text, void], 0)

    def _per_class(self, logits: torch.Tensor, vocab: VocabularyState) -> torch.Tensor:
        """B x Q x (S+1) synonym logits -> B x Q x (K+1) class logits (void last)."""
        cls = class_max(logits[..., :-1], vocab.synonym_class, vocab.num_classes)
        return torch.cat([cls, logits[..., -1:]], -1)

    def classify(self, outputs: Tuple[torch.Tensor, ...], vocab: VocabularyState) -> torch.Tensor:
        """Image-path outputs + vocabulary -> B x Q x (K+1) class logits (log-probabilities
        with void last, the form the panoptic/semantic inference takes)."""
        _, class_embed, clip_embed = outputs[:3]
        classifier = self._classifier(vocab)
        in_logits = self._per_class(cosine_logits(
            class_embed.float(), classifier, self.head.sem_seg_head.predictor.logit_scale), vocab)
        out_logits = self._per_class(cosine_logits(
            clip_embed.float(), classifier, self.clip_model.logit_scale), vocab)
        return geometric_ensemble(in_logits, out_logits, self._seen_mask(vocab),
                                  self.cfg[f"{self.group}.geometric_alpha"],
                                  self.cfg[f"{self.group}.geometric_beta"])

    @staticmethod
    def _with_void(cls_logits: torch.Tensor, in_logits: torch.Tensor) -> torch.Tensor:
        """softmax(cls) * (1 - P(void)) beside P(void) from the in-vocabulary head, as logs."""
        p_void = in_logits.softmax(-1)[..., -1:]
        probs = torch.cat([cls_logits.softmax(-1) * (1.0 - p_void), p_void], -1)
        return torch.log(probs + 1e-8)

    def _run_image(self, x: torch.Tensor, timer: StageTimer) -> Tuple[torch.Tensor, ...]:
        timed = self.backend.eager   # stage timers inside the module run only when eager
        with stage_timer(timer if timed else None), torch.no_grad():
            outs = self.backend(x)
        if not timed:
            timer("image_model")
        return tuple(o.float() for o in outs)

    @staticmethod
    def _to_padded(logits: torch.Tensor) -> torch.Tensor:
        """N x h4 x w4 -> 1 x N x Hp x Wp: bilinear up to the padded input."""
        hp, wp = logits.shape[-2] * 4, logits.shape[-1] * 4
        return F.interpolate(logits[None], size=(hp, wp), mode="bilinear", align_corners=False)

    @staticmethod
    def _to_original(x: torch.Tensor, resized: Tuple[int, int], original: Tuple[int, int]
                     ) -> torch.Tensor:
        """1 x N x Hp x Wp -> N x H x W: crop the padding, bilinear to the original image
        (detectron2's sem_seg_postprocess)."""
        x = x[..., :resized[0], :resized[1]]
        if tuple(resized) != tuple(original):
            x = F.interpolate(x, size=original, mode="bilinear", align_corners=False)
        return x[0]

    def _upsample(self, logits: torch.Tensor, resized: Tuple[int, int],
                  original: Tuple[int, int]) -> torch.Tensor:
        """N x h4 x w4 mask logits -> N x H x W: up to the padded input, crop the padding,
        resize to the original image (the reference's sem_seg_postprocess)."""
        return self._to_original(self._to_padded(logits), resized, original)

    def _semantic_masks(self, logits: torch.Tensor, resized: Tuple[int, int],
                        original: Tuple[int, int]) -> torch.Tensor:
        """N x h4 x w4 mask logits -> N x H x W mask probabilities for the semantic sum.

        FC-CLIP's eval configs turn panoptic inference on, which makes the reference
        resize the mask logits to the input first (sem_seg_postprocess_before_inference)
        and take the sigmoid there."""
        return self._upsample(logits, resized, original).sigmoid()

    def _semantic(self, probs: torch.Tensor, mask_logits: torch.Tensor, resized, original,
                  scores: bool, budget: int) -> MaskSemantic:
        """Class scores normalised per pixel (the argmax is the reference's semantic label),
        in class chunks: no K x H x W volume unless asked (core/postprocess.py)."""
        return mask_semantic(probs, lambda i0, i1: self._semantic_masks(
            mask_logits[i0:i1], resized, original), tuple(original), scores=scores,
            budget=budget)

    def _postprocess(self, mask_cls: torch.Tensor, mask_logits: torch.Tensor,
                     vocab: VocabularyState, resized, original, scores: bool = False):
        g = self.group
        h, w = original
        probs = mask_cls.softmax(-1)[:, :-1]                       # Q x K
        chunk = max(1, _UPSAMPLE_BUDGET // max(1, h * w * 4))
        sem = self._semantic(probs, mask_logits, resized, original, scores, chunk * h * w)
        keep, q_scores, labels = select_queries(mask_cls, self.cfg[f"{g}.object_mask_threshold"])
        idx = torch.nonzero(keep).flatten()
        # the kept queries' masks at the input's size, a chunk at a time: all at once were
        # N x H x W (564 MB for 17 queries at 3840 x 2160)
        panoptic, segments, owners = merge_segments_chunked(
            q_scores[idx], labels[idx],
            lambda i0, i1: self._upsample(mask_logits[idx[i0:i1]], resized, original).sigmoid(),
            (h, w), vocab.is_thing, self.cfg[f"{g}.overlap_threshold"], chunk=chunk,
            device=mask_logits.device, with_queries=True)
        semantic = apply_prob_thd(sem.labels, sem.confidence, self.cfg["prob_thd"])
        # segment id -> indices of the queries that made it (into all Q queries)
        owners = {sid: idx[qs].tolist() for sid, qs in owners.items()}
        return (semantic.to(torch.int32).cpu().numpy(), sem.confidence.cpu().numpy(),
                sem.scores.cpu().numpy() if sem.scores is not None else None, panoptic,
                segments, owners)

    @staticmethod
    def segment_embeddings(clip_embed: torch.Tensor, owners: Dict[int, List[int]]
                           ) -> Dict[int, np.ndarray]:
        """Segment id -> L2-normalised mean of its queries' normalised mask-pooled CLIP
        embeddings (Q x D; one query for a thing, the merged ones for stuff): the vectors
        the out-of-vocabulary classifier takes the cosine of, so they are in the text space."""
        if not owners:
            return {}
        unit = F.normalize(clip_embed.float(), dim=-1)
        ids = list(owners)
        pool = torch.zeros((len(ids), unit.shape[0]), dtype=unit.dtype, device=unit.device)
        for row, sid in enumerate(ids):
            pool[row, owners[sid]] = 1.0 / len(owners[sid])
        rows = F.normalize(pool @ unit, dim=-1).cpu().numpy().astype(np.float32)
        return dict(zip(ids, rows))

    def preprocess(self, rgb: np.ndarray) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """HxWx3 uint8 -> 1x3xhxw float in [0, 1] resized like the reference (PIL bilinear)."""
        from PIL import Image

        h, w = rgb.shape[:2]
        nh, nw = bounded_resize(self.cfg, self.group, h, w).size
        if (nh, nw) != (h, w):
            rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR))
        x = torch.from_numpy(np.array(rgb, copy=True)).to(self.device)
        x = x.permute(2, 0, 1)[None].float().div_(255.0)
        return x, (nh, nw)

    def predict(self, rgb: np.ndarray, vocab: VocabularyState, scores: bool = False
                ) -> Prediction:
        t_start = time.perf_counter()
        timer = StageTimer(self.device)
        timer.start()
        x, resized = self.preprocess(rgb)
        timer("preprocess")
        outs = self._run_image(x, timer)
        with torch.no_grad():
            mask_cls = self.classify(outs, vocab)[0]
            timer("classify")
            semantic, conf, volume, panoptic, segments, owners = self._postprocess(
                mask_cls, outs[0][0], vocab, resized, rgb.shape[:2], scores=scores)
            timer("post")
            embeddings = None
            if self.embeddings_enabled:
                embeddings = self.segment_embeddings(outs[2][0], owners)
                timer("embeddings")
        timings = dict(timer.times)
        timings["total"] = time.perf_counter() - t_start
        return self.make_prediction(semantic, conf, volume, panoptic, segments, vocab, timings,
                                    embeddings=embeddings,
                                    notes=bounded_resize(self.cfg, self.group,
                                                         *rgb.shape[:2]).notes)

    def model_facts(self) -> dict:
        sampling = self.cfg[f"{self.group}.deformable_sampling"]
        if sampling == "gather" and not self.backend.eager:
            sampling = "grid_sample"      # traced/exported graphs: GridSample per level
        facts = {"clip_model": self.clip_model_name, "num_queries": self.spec.num_queries,
                 "deformable_sampling": sampling}
        if self.cfg["precision"] in ("bf16", "fp16"):
            facts["low_precision_scope"] = BF16_SCOPE
        return facts

    def weights_identity(self) -> dict:
        return {"head": self._head_id, "clip": self._text_id}


__all__ = ["FCClipEngine", "resize_shortest_edge", "bounded_resize", "is_seen_class", "class_max",
           "geometric_ensemble"]
