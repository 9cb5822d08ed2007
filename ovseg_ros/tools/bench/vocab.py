"""The vocabulary axis of ``ovseg-bench --vocab-sizes``: the class lists of each size, the
first-time text encoding and its cached reload, and the frame time that follows the vocabulary.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from .common import VOCABULARY


def vocabulary_of_size(n: int) -> List[str]:
    """The vocabulary-axis lists: 10 = VOCABULARY, 150 = ADE-150, 847 = ADE-847, any other
    size the first n classes of ADE-847 (up to 847)."""
    from ...core.class_names import load_class_file

    if n == len(VOCABULARY):
        return list(VOCABULARY)
    if n == 150:
        return list(load_class_file("ade150").names)
    ade847 = load_class_file("ade847").names
    if not 1 <= n <= len(ade847):
        raise SystemExit(f"--vocab-sizes: {n} must be in 1..{len(ade847)}")
    return list(ade847[:n])


def measure_text(seg, config: Dict[str, Any]) -> Dict[str, Any]:
    """First-time encoding of the config's vocabulary (the case's text cache is fresh) and
    its reload from the disk cache by a new embedder (no in-memory entries)."""
    from ...core.text_cache import TextEmbedder

    t0 = time.perf_counter()
    vocab = seg.vocabulary                       # encoded now (lazy default vocabulary)
    encode_s = time.perf_counter() - t0
    stats = dict(seg._text.last_stats)
    fresh = TextEmbedder.for_engine(seg.engine, seg.config)
    t0 = time.perf_counter()
    fresh.embed_vocabulary(vocab.synonyms)
    reload_s = time.perf_counter() - t0
    return {"num_classes": vocab.num_classes, "num_synonyms": int(vocab.embeddings.shape[0]),
            "num_templates": len(seg._text.templates),
            "text_prompts": int(stats.get("encoded", 0)) * len(seg._text.templates),
            "text_encode_s": encode_s, "text_reload_s": reload_s,
            "text_reload_disk_hits": fresh.last_stats.get("disk_hits"),
            # the encoder's path (shared_prefix / truncated / full), where it has one
            "text_encoder_mode": getattr(getattr(seg.engine, "_text_encoder", None), "mode",
                                         None)}


def labels_only_frames(seg, rgb, iters: int) -> Dict[str, Any]:
    """The same frame with ``predict(confidence=False)``, as the node runs it when no output,
    tracker or locate needs the confidence: p50 latency and the vocabulary stages."""
    import statistics

    lat: List[float] = []
    stages: Dict[str, List[float]] = {}
    for _ in range(max(1, iters)):
        t0 = time.perf_counter()
        pred = seg.predict(rgb, confidence=False)
        lat.append(time.perf_counter() - t0)
        for k, v in pred.timings.items():
            stages.setdefault(k, []).append(float(v))
    return {"labels_only": {"latency_ms_p50": 1000 * statistics.median(lat),
                            "stages_ms": {k: 1000 * statistics.fmean(v)
                                          for k, v in stages.items()},
                            "counts": dict(pred.counts)}}


def _vocab_ms(r: Dict[str, Any]) -> Optional[float]:
    """The stages whose cost follows the vocabulary: the text cosine and post-processing."""
    st = r.get("stages_ms", {})
    if "post" not in st:
        return None
    return st.get("post", 0.0) + st.get("text", 0.0) + st.get("classify", 0.0)


def _held_ratio(r: Dict[str, Any], base: Dict[str, Any]) -> Optional[float]:
    """The frame-time ratio to the smallest vocabulary with the model's time held at the
    smallest case's: (p50_base + vocabulary stages_r - vocabulary stages_base) / p50_base.
    Each case builds its own model, and on shared cores its time swings by more than the
    vocabulary's cost; this keeps only what the vocabulary adds."""
    a, b = _vocab_ms(r), _vocab_ms(base)
    if a is None or b is None or not base.get("latency_ms_p50"):
        return None
    return (base["latency_ms_p50"] + a - b) / base["latency_ms_p50"]


def _held_ratio_labels_only(r: Dict[str, Any], base: Dict[str, Any]) -> Optional[float]:
    """``_held_ratio`` of the ``predict(confidence=False)`` frames (``labels_only_frames``)."""
    if "labels_only" not in r or "labels_only" not in base:
        return None
    return _held_ratio(r["labels_only"], base["labels_only"])

