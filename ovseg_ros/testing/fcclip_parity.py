"""Calibrated parity weights for FC-CLIP and MAFT+ (comparisons, bf16 measurement, tests).

Seeded random weights make FC-CLIP and MAFT+ label every pixel of a photo with one class
and keep no panoptic query, so two implementations agree 100 % whatever they compute.
These weights are random too, but calibrated so that the labels vary over the four
comparison photos (``ovseg_ros.testing.comparison.photos``) and several queries pass the
panoptic thresholds, as with a trained network. They are in the released key layout:
the tiny ConvNeXt CLIP of ``ovseg_ros.testing.tiny_models`` (``ovseg-tiny-ConvNeXt``) as
a CLIP checkpoint (``<engine>.clip_checkpoint``) and the head (plus, for MAFT+, ``cdt.*``
and the fine-tuned visual tower ``backbone.clip_model.visual.*``) as the engine's
checkpoint (``<engine>.checkpoint``), both loaded strictly by the engine.

What is done to the seeded initial weights, and why each step exists:

* ``noise``: seeded noise on every parameter of the head and of CLIP's visual tower
  (``ovseg_checkpoint.randomise``: std noise/sqrt(fan-in) for matrices, noise/4 for
  vectors), so no weight keeps a symmetric initial value (the deformable attention's
  offsets and weights start at zero) and every code path carries data;
* biases of the head's linear/convolution layers and the transformer decoder's (and the
  CDT's) norms are
  scaled by ``bias_gain``: a bias is the same vector for every query and pixel, and random
  ones add a shared component that makes every query's mask and class alike (trained
  biases are fitted to the data instead);
* ``cdt_gain`` (MAFT+) on the Content-Dependent Transfer's output layer: its random
  attention also averages the image almost uniformly, and at full gain that one vector
  replaces every class's text row, so one class wins everywhere; trained, it refines them;
* ``residual_gain`` on the transformer decoder's residual branches (attention output
  projections, FFN second layers): random attention averages its inputs almost
  uniformly, so each of the 9 layers adds nearly the same vector to every query and the
  250 queries collapse onto one; a trained decoder keeps its learned queries apart;
* ``mask_gain`` on the last layer of the mask embedding: masks as sharp as a trained
  network's (sigmoid near 0 or 1 away from the edges), as OVSeg's parity weights do;
* ``mask_area``: channel 0 of the mask features becomes the constant 1 and channel 0 of
  the mask embedding a constant offset, set on the calibration photos so that a share
  ``mask_area`` of all query masks' pixels is positive: random queries' masks otherwise
  cover about half of the image each (which masks are large is chance), the few largest
  win every pixel, and one class labels the photo; a trained network's queries cover
  objects and regions;
* ``logit_scale``: CLIP's and the in-vocabulary head's logit scale set to a trained CLIP's
  100 (a random CLIP starts at 1/0.07 = 14.3, which leaves every class probability near
  1/K, below MAFT+'s object-mask threshold of 0.2);
* centring on the calibration photos (the four comparison photos resized as
  the engine does to ``calibration_short_side`` / ``calibration_max_size``, 480 / 640 as a
  VGA camera frame): the res5 map's mean over pixels is removed (bias of the last
  ConvNeXt block), CLIP's pooling head is centred before its MLP (head norm bias to 0,
  MLP input bias minus its mean over the queries' pooled vectors), and the in-vocabulary
  class embedding is centred over the queries (bias of its last layer). Random features
  are dominated by a component shared by every pixel and query, so one text row is the
  nearest to all queries; a trained network's embeddings are spread over the classes.
  These means are measured with this module's own fp32 forward once, before the file is
  written: the file is a fixed set of weights like any other.

Nothing here is used by production code.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch
from torch import nn

from .comparison import CLASSES, photos
from .ovseg_checkpoint import randomise

#: the tiny ConvNeXt CLIP (ovseg_ros.testing.tiny_models) the weights are built for
TINY_CLIP = "ovseg-tiny-ConvNeXt"


@dataclass(frozen=True)
class ParityGains:
    """The calibration (module docstring: why each gain exists)."""

    noise: float = 2.0
    bias_gain: float = 0.0
    residual_gain: float = 0.05
    mask_gain: float = 3.0
    cdt_gain: float = 0.02
    mask_area: float = 0.05
    logit_scale: float = 100.0
    calibration_short_side: int = 480
    calibration_max_size: int = 640


def _base_config(engine: str, **extra) -> dict:
    return {"engine": engine, "text_cache_dir": "", f"{engine}.clip_model": TINY_CLIP,
            "vocabulary": CLASSES, "precision": "fp32", "backend": "torch", **extra}


def _scale_biases(head: nn.Module, gain: float) -> None:
    for mod in head.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)) and mod.bias is not None:
            mod.bias.mul_(gain)
    norms = [head.sem_seg_head.predictor] + ([head.cdt] if hasattr(head, "cdt") else [])
    for mod in (m for part in norms for m in part.modules()):
        if isinstance(mod, nn.LayerNorm):
            mod.bias.mul_(gain)


def _residual_gain(predictor: nn.Module, gain: float) -> None:
    for i in range(predictor.num_layers):
        for mod in (predictor.transformer_self_attention_layers[i].self_attn.out_proj,
                    predictor.transformer_cross_attention_layers[i].multihead_attn.out_proj,
                    predictor.transformer_ffn_layers[i].linear2):
            mod.weight.mul_(gain)
            mod.bias.mul_(gain)


def _mean_input(module: nn.Module, run, images: Iterable[torch.Tensor], reduce) -> torch.Tensor:
    """Mean of ``reduce(input of module)`` over the images (one fp32 forward each)."""
    seen = []
    hook = module.register_forward_hook(lambda m, a, out: seen.append(reduce(a[0].detach())))
    try:
        for x in images:
            run(x)
    finally:
        hook.remove()
    return torch.stack(seen).mean(0)


def _mask_offset(engine, images, area: float, rounds: int = 3) -> None:
    """Channel 0 of the mask features made the constant 1 and the mask embedding's channel 0
    the constant ``offset``: every mask logit moves by ``offset``, chosen so that a share
    ``area`` of all (query, pixel) logits of the calibration photos is positive (a few
    rounds: the decoder's attention masks follow the offset)."""
    conv = engine.head.sem_seg_head.pixel_decoder.mask_features
    last = engine.head.sem_seg_head.predictor.mask_embed.layers[-1]
    conv.weight[0].zero_()
    conv.bias[0] = 1.0
    last.weight[0].zero_()
    last.bias[0] = 0.0
    for _ in range(rounds):
        logits = torch.cat([engine.image_model(x)[0].flatten() for x in images])
        step = logits[torch.randperm(logits.numel(), generator=torch.Generator().manual_seed(0))
                      [:1 << 20]].quantile(1.0 - area)
        last.bias[0] -= step


def _centre(engine, images) -> None:
    """The three centrings of the module docstring, in forward order."""
    visual = engine.image_model.visual
    run = engine.image_model
    last = visual.trunk.stages[-1].blocks[-1]
    # res5 = shortcut + fc2(...): its mean over pixels (channels last in the block's MLP)
    mean5 = _mean_input(visual.trunk.norm_pre, run, images, lambda t: t.mean((0, 2, 3)))
    last.mlp.fc2.bias.sub_(mean5)
    visual.trunk.head.norm.bias.zero_()
    fc1 = visual.head.mlp.fc1
    mean_in = _mean_input(fc1, run, images, lambda t: t.reshape(-1, t.shape[-1]).mean(0))
    fc1.bias.sub_(fc1.weight @ mean_in)
    last_class = engine.head.sem_seg_head.predictor.class_embed.layers[-1]
    mean_c = _mean_input(last_class, run, images, lambda t: t.reshape(-1, t.shape[-1]).mean(0))
    last_class.bias.sub_(last_class.weight @ mean_c)


def calibrated_engine(engine: str, gains: ParityGains = ParityGains(), seed: int = 0,
                      modules: Optional[dict] = None):
    """A segmenter of ``engine`` ("fcclip" or "maftplus", tiny CLIP, fp32) holding the
    parity weights (built in memory: the weights ``write_parity_weights`` saves).
    ``modules``: settings that shape the modules (``maftplus.cdt_variant``,
    ``<engine>.num_queries``)."""
    from .. import load_segmenter
    from . import tiny_models  # noqa: F401  (registers the tiny ConvNeXt CLIP)

    side = gains.calibration_short_side
    cfg = _base_config(engine, random_init=True, **{
        f"{engine}.short_side": side, f"{engine}.max_size": gains.calibration_max_size})
    cfg.update(modules or {})
    seg = load_segmenter(cfg)
    eng = seg.engine
    predictor = eng.head.sem_seg_head.predictor
    with torch.no_grad():
        randomise(eng.head, seed, gains.noise)
        randomise(eng.clip_model.visual, seed + 1, gains.noise)
        _scale_biases(eng.head, gains.bias_gain)
        if hasattr(eng.head, "cdt"):
            mlp = eng.head.cdt.cross_atten.MLP
            mlp.weight.mul_(gains.cdt_gain)
            mlp.bias.mul_(gains.cdt_gain)
        _residual_gain(predictor, gains.residual_gain)
        for name in ("weight", "bias"):
            getattr(predictor.mask_embed.layers[-1], name).mul_(gains.mask_gain)
        predictor.logit_scale.fill_(math.log(gains.logit_scale))
        eng.clip_model.logit_scale.fill_(math.log(gains.logit_scale))
        images = [eng.preprocess(rgb)[0] for rgb in photos().values()]
        _mask_offset(eng, images, gains.mask_area)
        _centre(eng, images)
    return seg


def parity_state_dicts(engine: str, gains: ParityGains = ParityGains(), seed: int = 0,
                       modules: Optional[dict] = None) -> Dict[str, Dict[str, torch.Tensor]]:
    """{"clip": the open_clip state dict (``<engine>.clip_checkpoint``), "checkpoint": the
    released file's inference keys (``<engine>.checkpoint``)}."""
    from ..models.checkpoint import CLIP_PREFIX

    eng = calibrated_engine(engine, gains, seed, modules).engine
    clip = {k: v.detach().clone().contiguous() for k, v in eng.clip_model.state_dict().items()}
    head = {k: v.detach().clone().contiguous() for k, v in eng.head.state_dict().items()}
    if eng.dense_output:   # MAFT+ carries its fine-tuned visual tower
        head.update({CLIP_PREFIX + k: v for k, v in clip.items() if k.startswith("visual.")})
    return {"clip": clip, "checkpoint": head}


def write_parity_weights(engine: str, directory, gains: ParityGains = ParityGains(),
                         seed: int = 0, modules: Optional[dict] = None, **config) -> dict:
    """Write the parity weights of ``engine`` under ``directory`` (``<engine>_parity_clip.pt``,
    ``<engine>_parity.pth`` as ``{"model": ...}``, the way detectron2 saves a checkpoint)
    and return a config that loads them (fp32, torch backend, the comparison vocabulary;
    ``modules``: settings that shape the modules, also in the config; ``config``: further
    settings of the returned config)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sds = parity_state_dicts(engine, gains, seed, modules)
    clip_path = directory / f"{engine}_parity_clip.pt"
    head_path = directory / f"{engine}_parity.pth"
    torch.save(sds["clip"], str(clip_path))
    torch.save({"model": sds["checkpoint"], "parity_gains": asdict(gains), "seed": seed},
               str(head_path))
    cfg = _base_config(engine, random_init=False, **{
        f"{engine}.clip_checkpoint": str(clip_path), f"{engine}.checkpoint": str(head_path)})
    cfg.update(modules or {})
    cfg.update(config)
    return cfg


__all__ = ["ParityGains", "TINY_CLIP", "calibrated_engine", "parity_state_dicts",
           "write_parity_weights"]
