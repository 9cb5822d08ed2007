"""ovseg-segment with a registered depth file: labelled PLY and 3D segments JSON, the same
cloud from a 16-bit PNG (mm) and a .npy (metres), and clear errors."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from ovseg_ros.tools.segment import main
from ovseg_ros.testing import rgbd_scene as S

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "test" / "configs" / "tiny_proxyclip.yaml")
W, H = 160, 120
K = dict(fx=S.FX / 4, fy=S.FY / 4, cx=(S.CX + 0.5) / 4 - 0.5, cy=(S.CY + 0.5) / 4 - 0.5)


@pytest.fixture
def files(tmp_path):
    rgb, mm, _, _, _ = S.render(0, W, H, **K)
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb[..., ::-1])
    cv2.imwrite(str(tmp_path / "depth.png"), mm)
    np.save(tmp_path / "depth.npy", S.depth_32f(mm))
    k = [K["fx"], 0, K["cx"], 0, K["fy"], K["cy"], 0, 0, 1]
    (tmp_path / "info.yaml").write_text(yaml.safe_dump({
        "image_width": W, "image_height": H, "distortion_model": "plumb_bob",
        "camera_matrix": {"rows": 3, "cols": 3, "data": k},
        "distortion_coefficients": {"rows": 1, "cols": 5, "data": [0.0] * 5},
        "projection_matrix": {"rows": 3, "cols": 4,
                              "data": k[:3] + [0] + k[3:6] + [0] + k[6:] + [0]}}))
    return tmp_path, mm


def run(tmp, out, depth, *extra):
    return main(["--config", TINY, "--out", str(tmp / out), "--quiet", "--depth",
                 str(tmp / depth), *extra, "--vocab", *S.CLASSES, "--", str(tmp / "rgb.png")])


def test_ply_and_segments_3d_from_png_and_npy(files):
    from plyfile import PlyData

    tmp, mm = files
    flags = [f"--{k}={v}" for k, v in K.items()]
    assert run(tmp, "a", "depth.png", *flags) == 0
    assert run(tmp, "b", "depth.npy", "--camera-info", str(tmp / "info.yaml")) == 0
    a = PlyData.read(str(tmp / "a" / "rgb_cloud.ply"))["vertex"].data
    b = PlyData.read(str(tmp / "b" / "rgb_cloud.ply"))["vertex"].data
    assert a.tobytes() == b.tobytes() and a.size == W * H
    v, u = np.mgrid[:H, :W]
    z = mm.astype(np.float64).reshape(-1) / 1000
    np.testing.assert_allclose(a["x"], ((u.reshape(-1) - K["cx"]) * z / K["fx"]), atol=1e-5)
    np.testing.assert_allclose(a["z"], z, atol=1e-6)
    sem = cv2.imread(str(tmp / "a" / "rgb_semantic.png"), cv2.IMREAD_UNCHANGED)
    assert (a["label"] == sem.reshape(-1)).all()
    seg3 = json.loads((tmp / "a" / "rgb_segments_3d.json").read_text())
    assert seg3["segments"] and seg3["intrinsics"]["source"] == "given"
    assert set(seg3["segments"][0]) >= {"id", "centroid", "size", "valid_points"}


def test_depth_errors_are_clear(files, capsys):
    tmp, mm = files
    cv2.imwrite(str(tmp / "small.png"), mm[::2, ::2])
    assert run(tmp, "c", "small.png", "--fx=1", "--fy=1", "--cx=1", "--cy=1") == 2
    assert "is 80x60 but the image is 160x120" in capsys.readouterr().err
    assert run(tmp, "c", "depth.png") == 2
    assert "needs intrinsics" in capsys.readouterr().err
    cv2.imwrite(str(tmp / "colour.png"), np.zeros((H, W, 3), np.uint8))
    assert run(tmp, "c", "colour.png", "--fx=1", "--fy=1", "--cx=1", "--cy=1") == 2
    assert "single-channel" in capsys.readouterr().err
    assert main(["--config", TINY, "--fx", "3", "--", str(tmp / "rgb.png")]) == 2
    assert "need --depth" in capsys.readouterr().err
