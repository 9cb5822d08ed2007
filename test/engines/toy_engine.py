"""A fifth engine, outside the package: what "adding an engine" takes (docs/architecture.md,
"Adding an engine"). test/engines/test_adding_an_engine.py installs it through the
``ovseg_ros.engines`` entry point and runs it through load_segmenter, the weights tool and
describe(), with no file of ``ovseg_ros`` changed.

The method is a toy: the frame's CLIP image embedding, through a linear head, against the
text rows; the whole frame takes the best class. Its networks are the tiny test CLIP and a
``torch.nn.Linear``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ovseg_ros.backends.base import ExportSpec
from ovseg_ros.config import Config
from ovseg_ros.core.panoptic_heuristic import semantic_to_panoptic
from ovseg_ros.core.postprocess import softmax_argmax
from ovseg_ros.engines.base import Engine, OpenClipText, graph_settings
from ovseg_ros.registry import register_engine
from ovseg_ros.weights import (RANDOM_SEED, WeightsError, clip_architecture, create_clip,
                               file_fingerprint, read_state_dict)
from ovseg_ros.weights.sources import CheckpointFile, OpenClipWeights, Release, WeightsNeed
from ovseg_ros.weights.state_dict import inference_part


class ToyImageModel(torch.nn.Module):
    """B x 3 x H x W in [0, 1] -> B x D: CLIP's image embedding through the head."""

    def __init__(self, visual: torch.nn.Module, head: torch.nn.Module, size: int):
        super().__init__()
        self.visual, self.head, self.size = visual, head, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.head(self.visual((x - 0.5) / 0.25))


@register_engine("toy")
class ToyEngine(OpenClipText, Engine):
    name = "toy"
    checkpoint_setting = "toy.checkpoint"
    docs = "test/engines/toy_engine.py"
    releases = (Release("toy", "toy_head.pth", "the toy head", "toy-drive-id",
                        "test/engines/toy_engine.py"),)

    @classmethod
    def weights_needs(cls, cfg: Config) -> Tuple[WeightsNeed, ...]:
        return (OpenClipWeights("toy.clip_model", "toy.clip_pretrained", "toy.clip_checkpoint"),
                CheckpointFile("toy.checkpoint"))

    @classmethod
    def _head(cls, dim: int) -> torch.nn.Module:
        return torch.nn.Linear(dim, dim)

    @classmethod
    def checkpoint_layout(cls, cfg: Config):
        clip = clip_architecture(cfg["toy.clip_model"], key_prefix="toy")
        with torch.device("meta"):
            head = cls._head(int(clip.text_projection.shape[-1]))
        return {f"head.{k}": tuple(v.shape) for k, v in head.state_dict().items()}

    @classmethod
    def is_inference_key(cls, key: str) -> bool:
        return not key.startswith("criterion.")

    def build(self, checkpoint: Optional[Path]) -> None:
        cfg = self.cfg
        clip = create_clip(cfg["toy.clip_model"], cfg["toy.clip_pretrained"],
                           cfg["toy.clip_checkpoint"], random_init=cfg["random_init"],
                           weights_dir=cfg["weights_dir"], key_prefix="toy")
        self.clip_model, self._clip_id = clip.model.to(self.device), clip.identity
        dim = int(self.clip_model.text_projection.shape[-1])
        if checkpoint is None:
            with self.seeded():
                head = self._head(dim)
            self._head_id = f"random:{RANDOM_SEED}"
        else:
            kept, problems = inference_part(read_state_dict(checkpoint),
                                            self.checkpoint_layout(cfg), self.is_inference_key)
            if problems:
                raise WeightsError(f"{checkpoint} (config key 'toy.checkpoint'): "
                                   + "; ".join(problems))
            head = self._head(dim)
            head.load_state_dict({k[len("head."):]: v for k, v in kept.items()})
            self._head_id = f"file:{file_fingerprint(checkpoint)}"
        import open_clip

        self.tokenizer = open_clip.get_tokenizer(cfg["toy.clip_model"])
        model = ToyImageModel(self.clip_model.visual, head, cfg["toy.input_size"]).eval()
        self.backend = self.add_backend("image", ExportSpec(
            model.to(self.device), model_id=f"toy-{self._clip_id}-{self._head_id}",
            graph_settings=graph_settings(cfg, "toy")))

    def text_encoder_id(self) -> str:
        return f"open_clip:{self._clip_id}"

    def predict(self, rgb: np.ndarray, vocab, scores: bool = False):
        t0 = time.perf_counter()
        h, w = rgb.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device)
        x = x.permute(2, 0, 1)[None].float().div(255.0)
        with torch.no_grad():
            emb = F.normalize(self.backend(x).float(), dim=-1)[0]                 # D
            logits = self.cfg["toy.logit_scale"] * (vocab.embeddings.float() @ emb)  # S
            volume = logits.view(-1, 1, 1).expand(-1, h, w).contiguous()
            labels, conf, probs = softmax_argmax([volume], vocab.synonym_class,
                                                 vocab.num_classes, scores=scores)
        semantic = labels.to(torch.int32).cpu().numpy()
        confidence = conf.cpu().numpy()
        panoptic, segments = semantic_to_panoptic(semantic, confidence, vocab.is_thing)
        return self.make_prediction(
            semantic, confidence, probs.cpu().numpy() if probs is not None else None, panoptic,
            segments, vocab, {"total": time.perf_counter() - t0})

    def model_facts(self) -> dict:
        return {"clip_model": self.cfg["toy.clip_model"], "input_size": self.cfg["toy.input_size"]}

    def weights_identity(self) -> dict:
        return {"clip": self._clip_id, "head": self._head_id}
