"""Back-projection, the labelled cloud and per-segment 3D statistics (core/geometry.py),
the 3D products and marker plan, on the exact SYNTHETIC RGB-D scene."""
import numpy as np
import pytest

from ovseg_ros.core import geometry as G
from ovseg_ros.core.depth import DepthError, DepthFrame, Intrinsics, depth_to_metres
from ovseg_ros.core.markers import MarkerPlanner
from ovseg_ros.core.products import FrameProducts
from ovseg_ros.core.products_3d import build_3d
from ovseg_ros.testing import rgbd_scene as S

INTR = Intrinsics(S.FX, S.FY, S.CX, S.CY, S.WIDTH, S.HEIGHT)


def scene(k=0):
    rgb, mm, sem, pan, boards = S.render(k)
    return rgb, depth_to_metres(mm, "16UC1")[0], sem, pan, boards


def test_every_point_is_the_pinhole_back_projection():
    rgb, m, sem, pan, _ = scene()
    m[10:20, 30:50] = np.nan
    xyz = G.backproject(m, INTR)
    v, u = np.mgrid[:S.HEIGHT, :S.WIDTH].astype(np.float64)
    z = m.astype(np.float64)
    ok = np.isfinite(z)
    np.testing.assert_allclose(xyz[..., 0][ok], ((u - S.CX) * z / S.FX)[ok], atol=1e-5, rtol=0)
    np.testing.assert_allclose(xyz[..., 1][ok], ((v - S.CY) * z / S.FY)[ok], atol=1e-5, rtol=0)
    assert np.isnan(xyz[~ok]).all() and ok.sum() == m.size - 200


def test_cloud_layout_fields_and_both_encodings():
    rgb, mm, sem, pan, _ = S.render(1)
    a = G.labelled_cloud(depth_to_metres(mm, "16UC1")[0], INTR, rgb, sem, pan)
    b = G.labelled_cloud(depth_to_metres(S.depth_32f(mm), "32FC1")[0], INTR, rgb, sem, pan)
    assert a.tobytes() == b.tobytes()
    assert a.shape == (S.HEIGHT, S.WIDTH) and a.dtype.itemsize == 32
    assert {n: a.dtype.fields[n][1] for n in a.dtype.names} == \
        {"x": 0, "y": 4, "z": 8, "rgb": 16, "label": 20, "instance": 24}
    r, g, bl = (int(c) for c in rgb[5, 7])
    assert int(a["rgb"][5, 7].view(np.uint32)) == (r << 16) | (g << 8) | bl
    assert (a["label"] == sem).all() and (a["instance"] == pan).all()
    raw = a.tobytes()                     # padding bytes are zero (no stale memory sent)
    rows = np.frombuffer(raw, np.uint8).reshape(-1, 32)
    assert not rows[:, 12:16].any() and not rows[:, 22:24].any() and not rows[:, 28:].any()


def test_dense_cloud_and_stride():
    rgb, m, sem, pan, _ = scene()
    m[:100] = np.nan
    dense = G.labelled_cloud(m, INTR, rgb, sem, pan, organised=False)
    assert dense.shape == (np.isfinite(m).sum(),) and np.isfinite(dense["z"]).all()
    thin = G.labelled_cloud(m, INTR, rgb, sem, pan, stride=4)
    assert thin.shape == (S.HEIGHT // 4, S.WIDTH // 4)
    full = G.labelled_cloud(m, INTR, rgb, sem, pan)
    for name in G.CLOUD_DTYPE.names:
        np.testing.assert_array_equal(thin[name], full[name][::4, ::4])


@pytest.mark.parametrize("bleed", [False, True])
def test_centroids_within_1cm_even_with_background_in_the_mask(bleed):
    rgb, m, sem, pan, boards = scene(2)
    pan = pan.copy()
    if bleed:   # 5 % of each mask's pixels on the wall behind: a ring outside the board
        import cv2

        rng = np.random.default_rng(0)
        for b in boards:
            mask = pan == b.id
            ring = np.flatnonzero(cv2.dilate(mask.astype(np.uint8), np.ones((5, 5))) & ~mask
                                  & (pan == 0))
            n = int(round(0.05 / 0.95 * mask.sum()))
            pan.reshape(-1)[rng.choice(ring, n, replace=False)] = b.id
    stats = {s["id"]: s for s in G.segment_stats(G.backproject(m, INTR), pan)}
    for b in boards:
        s = stats[b.id]
        assert s["eroded"]
        err = np.abs(np.array(s["centroid"]) - [b.x, b.y, b.z])
        assert err.max() < 0.01, (b, s["centroid"])
        assert s["valid_points"] == (pan == b.id).sum()
        assert abs(s["size"][0] - 0.9 * b.width) < 0.03 and abs(s["size"][1] - 0.9 * b.height) \
            < 0.03
    if bleed:
        assert max(s["depth_max"] for s in stats.values()) == np.float32(S.WALL_Z)


def test_small_object_40px_at_2m_and_the_full_mask_fallback():
    m = np.full((S.HEIGHT, S.WIDTH), 4.0, np.float32)
    pan = np.zeros(m.shape, np.int32)
    m[200:240, 300:340] = 2.0               # 40 x 40 px at 2 m
    pan[200:240, 300:340] = 7
    m[100:104, 100:104] = 3.0               # 4 x 4 px: its eroded mask is empty
    pan[100:104, 100:104] = 9
    xyz = G.backproject(m, INTR)
    s = {d["id"]: d for d in G.segment_stats(xyz, pan)}
    truth = [((319.5 - S.CX) * 2 / S.FX), ((219.5 - S.CY) * 2 / S.FY), 2.0]
    assert np.abs(np.array(s[7]["centroid"]) - truth).max() < 0.01 and s[7]["eroded"]
    assert not s[9]["eroded"] and s[9]["valid_points"] == 16
    assert s[9]["centroid"][2] == pytest.approx(3.0)


def test_segments_without_depth_are_left_out():
    m = np.full((S.HEIGHT, S.WIDTH), np.nan, np.float32)
    m[:10] = 1.0
    pan = np.zeros(m.shape, np.int32)
    pan[:10], pan[100:] = 1, 2
    assert [s["id"] for s in G.segment_stats(G.backproject(m, INTR), pan)] == [1]


def products_of(k=0):
    rgb, m, sem, pan, boards = scene(k)
    segs = [{"id": b.id, "class_id": 2, "class_name": "box", "is_thing": True, "score": 0.9,
             "area": int((pan == b.id).sum()), "bbox": [0, 0, 1, 1]} for b in boards]
    prod = FrameProducts(semantic=sem, panoptic=pan, confidence=None, segments=segs,
                         colored=None, vocabulary_version=3, random_weights=False)
    return prod, rgb, DepthFrame(m, INTR, "cam", 5)


def test_build_3d_is_lazy_and_checks_the_size():
    prod, rgb, depth = products_of()
    build_3d(prod, depth, {"semantic"}, rgb=rgb)
    assert prod.cloud is None and prod.segments_3d is None
    build_3d(prod, depth, {"markers"}, rgb=rgb)
    assert prod.cloud is None and [s["id"] for s in prod.segments_3d] == [1, 2, 3]
    build_3d(prod, depth, None, rgb=rgb)
    assert prod.cloud.shape == (S.HEIGHT, S.WIDTH)
    s = prod.segments_3d[0]
    assert set(s) == {"id", "class_id", "class_name", "is_thing", "score", "centroid", "size",
                      "valid_points", "depth_min", "depth_max"}
    small = DepthFrame(depth.metres[::2, ::2], INTR.scaled_to(320, 240), "cam", 5)
    with pytest.raises(DepthError, match="320x240 but the image is 640x480") as e:
        build_3d(prod, small, None, rgb=rgb)
    assert e.value.code == "size"


def test_marker_plan_ids_colours_and_deletions():
    prod, rgb, depth = products_of()
    build_3d(prod, depth, None, rgb=rgb)
    planner = MarkerPlanner("cam_front")
    p1 = planner.plan(prod.segments_3d, 3)
    assert p1.ns == "cam_front" and not p1.delete_all and p1.delete_ids == []
    assert [b.id for b in p1.boxes] == [1, 2, 3] and p1.boxes[0].text == "box 0.90"
    from ovseg_ros.core.palette import class_color
    assert p1.boxes[0].rgba[:3] == [c / 255 for c in class_color(2)]
    assert min(p1.boxes[0].size) >= 0.01        # a flat board keeps a visible thickness
    p2 = planner.plan(prod.segments_3d[:2], 3)
    assert p2.delete_ids == [3] and not p2.delete_all
    p3 = planner.plan(prod.segments_3d, 4)       # new vocabulary: everything goes first
    assert p3.delete_all and p3.delete_ids == []


def test_a_frame_filling_segment_is_measured_from_its_subsample():
    m = np.full((S.HEIGHT, S.WIDTH), 3.0, np.float32)
    pan = np.ones(m.shape, np.int32)
    (s,) = G.segment_stats(G.backproject(m, INTR), pan)
    assert s["valid_points"] == m.size > 10 * G.STATS_MAX_POINTS
    np.testing.assert_allclose(s["centroid"], [0.0, 0.0, 3.0], atol=0.01)
    np.testing.assert_allclose(s["size"][:2], [0.9 * S.WIDTH * 3 / S.FX,
                                               0.9 * S.HEIGHT * 3 / S.FY], rtol=0.02)


def test_dense_cloud_padding_is_zero_and_the_buffer_is_the_payload():
    rgb, m, sem, pan, _ = scene()
    m[::3] = np.nan
    for cloud in (G.labelled_cloud(m, INTR, rgb, sem, pan, organised=False),
                  G.labelled_cloud(m, INTR, rgb, sem, pan, stride=3)):
        rows = np.frombuffer(cloud.tobytes(), np.uint8).reshape(-1, 32)
        assert not rows[:, 12:16].any() and not rows[:, 22:24].any() and not rows[:, 28:].any()
        store = G.cloud_storage(cloud)        # the array.array a PointCloud2 takes as is
        assert store is not None and bytes(store) == cloud.tobytes()
    assert G.cloud_storage(np.zeros(4, G.CLOUD_DTYPE)) is None
    assert G.cloud_storage(G.cloud_buffer((4, 4))[1:]) is None


def reference_stats(xyz, pan, erode_px=G.ERODE_PX, min_eroded=G.MIN_ERODED_POINTS):
    """segment_stats by its definition, one mask at a time (slow, obvious)."""
    import cv2

    grid = np.zeros(pan.shape, bool)
    grid[::2, ::2] = True
    valid = np.isfinite(xyz[..., 2])

    def quantiles(mask, qs):
        if mask.sum() > G.STATS_MAX_POINTS:
            mask = mask & grid
        return np.quantile(xyz[mask].astype(np.float64), qs, axis=0)
    out = []
    for sid in np.unique(pan[pan > 0]):
        full = (pan == sid) & valid
        if not full.any():
            continue
        k = np.ones((2 * erode_px + 1,) * 2, np.uint8)
        inner = cv2.erode((pan == sid).astype(np.uint8), k, borderType=cv2.BORDER_REPLICATE)
        eroded = (inner.astype(bool) & valid).sum() >= min_eroded
        cen = quantiles(inner.astype(bool) & valid if eroded else full, [0.5])[0]
        lo, hi = quantiles(full, [0.05, 0.95])
        out.append({"id": int(sid), "centroid": cen, "size": hi - lo,
                    "valid_points": int(full.sum()), "depth_min": xyz[..., 2][full].min(),
                    "depth_max": xyz[..., 2][full].max(), "eroded": bool(eroded)})
    return out


@pytest.mark.parametrize("ids", ["small", "tracked"])
def test_stats_from_depth_match_the_definition_and_the_xyz_form(ids):
    rgb, m, sem, pan, _ = scene(1)
    rng = np.random.default_rng(3)
    m[rng.random(m.shape) < 0.05] = np.nan
    pan = pan.copy()
    pan[300:310, 400:405] = 40                  # 50 px: the full-mask fallback
    pan[0:120, 0:160] = 41                      # > STATS_MAX_POINTS: the grid subsample
    if ids == "tracked":                        # track ids beyond 65535
        pan = np.where(pan > 0, pan + 70000, 0).astype(np.int32)
    xyz = G.backproject(m, INTR)
    fast = G.segment_stats_depth(m, INTR, pan)
    assert fast == G.segment_stats(xyz, pan)    # bit for bit
    ref = reference_stats(xyz, pan)
    assert [s["id"] for s in fast] == [s["id"] for s in ref] and len(fast) >= 5
    for f, r in zip(fast, ref):
        assert (f["valid_points"], f["eroded"]) == (r["valid_points"], r["eroded"])
        assert (f["depth_min"], f["depth_max"]) == (r["depth_min"], r["depth_max"])
        np.testing.assert_allclose(f["centroid"], r["centroid"], atol=2e-6, rtol=0)
        np.testing.assert_allclose(f["size"], r["size"], atol=4e-6, rtol=0)
