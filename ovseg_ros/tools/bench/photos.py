"""Label agreement on real photos: each case's labels on scikit-image's sample photos against
those of the fp32 torch case of the same preset and size (``ovseg-bench``'s table).
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

#: scikit-image's sample photos: real image statistics for the bf16 / backend label agreement
#: (the synthetic frame's flat shapes hide most of the differences)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
#: (preset, size) -> labels of the fp32 torch case on each photo
_PHOTO_REFERENCE: Dict[tuple, List[np.ndarray]] = {}



def photo_frames(width: int, height: int) -> List[np.ndarray]:
    import cv2
    import skimage.data

    return [cv2.resize(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]),
                       (width, height), interpolation=cv2.INTER_AREA) for name in PHOTOS]


def photo_agreement(seg, case, shape) -> Dict[str, Any]:
    """Labels on the photos; the fp32 torch case keeps them as the reference, the other
    cases report the share of pixels equal to it (mean and worst photo)."""
    labels = [seg.predict(f).semantic for f in photo_frames(shape[1], shape[0])]
    key = (case.preset, case.size)
    if case.backend == "torch" and case.precision == "fp32":
        _PHOTO_REFERENCE[key] = labels
        return {}
    ref = _PHOTO_REFERENCE.get(key)
    if ref is None:
        return {}
    equal = [100.0 * float((a == b).mean()) for a, b in zip(labels, ref)]
    return {"labels_equal_fp32_photos_pct": float(np.mean(equal)),
            "labels_equal_fp32_photos_min_pct": float(min(equal)),
            "labels_equal_fp32_per_photo_pct": dict(zip(PHOTOS, equal))}

