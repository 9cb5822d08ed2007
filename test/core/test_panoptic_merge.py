"""Mask2Former/FC-CLIP panoptic and semantic inference on hand-made queries."""
import numpy as np
import pytest
import torch

from ovseg_ros.core.panoptic_merge import (merge_segments, merge_segments_chunked,
                                          panoptic_inference, semantic_inference)

# classes: 0 person (thing), 1 sky (stuff), 2 car (thing); column 3 = void
IS_THING = [True, False, True]
H, W = 4, 5


def _mask(cells):
    m = torch.full((H, W), -10.0)
    for r, c in cells:
        m[r, c] = 10.0
    return m


def _queries():
    left = [(r, c) for r in range(4) for c in (0, 1)]
    top_right = [(r, c) for r in (0, 1) for c in (2, 3)]
    bottom_right = [(r, c) for r in (2, 3) for c in (2, 3)]
    col4 = [(r, 4) for r in range(4)]
    cls = torch.tensor([
        [5.0, 0, 0, 0],    # q0 person, left half                      -> thing id 1
        [0, 5.0, 0, 0],    # q1 sky, top right                         -> stuff id 2
        [0, 5.0, 0, 0],    # q2 sky, bottom right                      -> merged into id 2
        [0, 0, 0, 5.0],    # q3 void (best class is void)              -> dropped
        [0, 0, 4.0, 0],    # q4 car: left half + col 4 rows 0-1; wins only 2/10 px
        [0, 0, 3.0, 0],    # q5 car: col 4; wins rows 2-3 = 2/4 px
    ])
    masks = torch.stack([_mask(left), _mask(top_right), _mask(bottom_right),
                         _mask(left + top_right), _mask(left + col4[:2]), _mask(col4)])
    return cls, masks


def test_overlap_rule_stuff_merging_and_void():
    cls, masks = _queries()
    pan, segs = panoptic_inference(cls, masks, IS_THING, object_mask_threshold=0.0,
                                   overlap_threshold=0.8)
    expected = np.array([[1, 1, 2, 2, 0]] * 4, dtype=np.int32)
    np.testing.assert_array_equal(pan, expected)
    assert pan.dtype == np.int32
    assert [(s.id, s.class_id, s.is_thing, s.area) for s in segs] == \
        [(1, 0, True, 8), (2, 1, False, 8)]
    p = torch.softmax(cls[0], -1)[0].item()
    assert segs[0].score == pytest.approx(p)
    assert segs[0].bbox == (0, 0, 2, 4)
    assert segs[1].bbox == (2, 0, 2, 4)


def test_lower_overlap_threshold_keeps_partial_segment():
    cls, masks = _queries()
    pan, segs = panoptic_inference(cls, masks, IS_THING, overlap_threshold=0.5)
    # q5 keeps 2 of its 4 pixels (0.5 >= 0.5); q4 keeps 2 of 10 and stays out
    assert [(s.id, s.class_id, s.area) for s in segs] == [(1, 0, 8), (2, 1, 8), (3, 2, 2)]
    assert pan[2, 4] == 3 and pan[3, 4] == 3 and pan[0, 4] == 0


def test_object_mask_threshold_drops_low_scores():
    cls, masks = _queries()
    cls[0] = torch.tensor([1.0, 0.5, 0.5, 0.5])     # person prob ~0.35
    cls[4] = torch.tensor([0.0, 0.0, 0.0, 5.0])     # q4 void: nothing else claims the left half
    _, segs = panoptic_inference(cls, masks, IS_THING, object_mask_threshold=0.5)
    assert 0 not in [s.class_id for s in segs]
    _, segs = panoptic_inference(cls, masks, IS_THING, object_mask_threshold=0.0)
    assert 0 in [s.class_id for s in segs]


def test_no_query_kept_gives_empty_panoptic():
    cls = torch.tensor([[0, 0, 0, 9.0]])
    pan, segs = panoptic_inference(cls, torch.zeros(1, 2, 3), IS_THING)
    assert segs == [] and pan.shape == (2, 3) and not pan.any()


def test_is_thing_length_checked():
    cls, masks = _queries()
    with pytest.raises(ValueError, match="is_thing"):
        panoptic_inference(cls, masks, [True, False])


def test_semantic_inference_by_hand():
    cls = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0]])      # K = 2, void last
    masks = torch.tensor([[[0.0, 3.0]], [[1.0, -2.0]]])          # Q x 1 x 2
    out = semantic_inference(cls, masks)
    p = torch.softmax(cls, -1)[:, :2]
    s = torch.sigmoid(masks)[:, 0]
    expected = torch.stack([p[0, k] * s[0] + p[1, k] * s[1] for k in range(2)])[:, None]
    torch.testing.assert_close(out, expected)
    assert out.shape == (2, 1, 2)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_chunked_merge_equals_the_whole_merge(chunk):
    # masks produced a few queries at a time (bounded memory at 4K) give the same panoptic
    # image and segments, ties included (quantised masks make many equal scores)
    g = torch.Generator().manual_seed(3)
    n, h, w = 7, 23, 31
    probs = (torch.rand((n, h, w), generator=g) * 4).round() / 4
    scores = torch.tensor([0.9, 0.9, 0.5, 0.7, 0.9, 0.3, 0.6])
    labels = torch.tensor([0, 1, 1, 2, 0, 1, 2])
    is_thing = [True, False, False]
    calls = []

    def chunks(i0, i1):
        calls.append(i1 - i0)
        return probs[i0:i1]

    whole = merge_segments(scores, labels, probs, is_thing, 0.3)
    part = merge_segments_chunked(scores, labels, chunks, (h, w), is_thing, 0.3, chunk=chunk)
    np.testing.assert_array_equal(part[0], whole[0])
    assert part[1] == whole[1] and len(whole[1]) > 1
    assert max(calls) <= chunk
