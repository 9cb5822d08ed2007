"""Segment reads as a mapping of its as_dict() keys (as the message dicts of
FrameProducts.segments do) and stays a frozen, hashable value."""
import dataclasses

import pytest

from ovseg_ros.core.types import Segment


def _seg(**kw):
    return Segment(**{"id": 3, "class_id": 1, "is_thing": False, "score": 0.7, "area": 12,
                      "bbox": (1, 2, 3, 4), **kw})


def test_dict_of_a_segment_is_its_as_dict():
    seg = _seg()
    assert dict(seg) == seg.as_dict() == {"id": 3, "class_id": 1, "is_thing": False,
                                          "score": 0.7, "area": 12, "bbox": [1, 2, 3, 4]}
    assert list(seg) == list(seg.keys()) == ["id", "class_id", "is_thing", "score", "area",
                                             "bbox"]
    assert len(seg) == 6 and "score" in seg and "class_name" not in seg
    assert seg["class_id"] == 1 and seg.get("nope", "d") == "d"
    with pytest.raises(KeyError):
        seg["nope"]


def test_segment_stays_a_frozen_value():
    seg = _seg()
    assert seg == _seg() and seg != _seg(score=0.8)
    assert len({seg, _seg()}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        seg.score = 1.0
