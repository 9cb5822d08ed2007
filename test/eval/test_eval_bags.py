"""rosbag2 reading/writing with rosbags: Image <-> numpy, topic checks, image/label pairing."""
import numpy as np
import pytest

from ovseg_ros.eval import bags as B
from ovseg_ros.eval.metrics import IGNORE

STORE = B.make_typestore()


def _header(stamp_ns=5):
    T = STORE.types
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
        sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="cam")


def test_typestore_has_ovseg_messages():
    for name in ("Segments", "Segment", "Vocabulary", "ClassInfo"):
        assert f"ovseg_ros/msg/{name}" in STORE.types


@pytest.mark.parametrize("enc,dtype,shape", [("rgb8", np.uint8, (5, 7, 3)),
                                             ("16UC1", np.uint16, (5, 7)),
                                             ("32SC1", np.int32, (5, 7)),
                                             ("mono8", np.uint8, (5, 7))])
def test_image_roundtrip(enc, dtype, shape):
    arr = np.random.default_rng(0).integers(0, 200, shape).astype(dtype)
    msg = B.numpy_to_image(STORE, arr, enc, _header())
    raw = STORE.serialize_cdr(msg, B.IMAGE_TYPE)
    back = B.image_to_numpy(STORE.deserialize_cdr(raw, B.IMAGE_TYPE))
    assert back.dtype == dtype and np.array_equal(back, arr)


def test_padded_rows_big_endian_and_colour_orders():
    Image = STORE.types[B.IMAGE_TYPE]
    vals = np.array([[1, 258], [65535, 7]], np.uint16)
    rows = [vals[r].astype(">u2").tobytes() + b"\0\0" for r in range(2)]   # step 6 > 4
    msg = Image(header=_header(), height=2, width=2, encoding="16UC1", is_bigendian=1, step=6,
                data=np.frombuffer(b"".join(rows), np.uint8))
    assert np.array_equal(B.image_to_numpy(msg), vals)
    bgr = np.array([[[1, 2, 3]]], np.uint8)
    assert B.to_rgb(bgr, "bgr8").tolist() == [[[3, 2, 1]]]
    assert B.to_rgb(np.array([[[1, 2, 3, 4]]], np.uint8), "bgra8").tolist() == [[[3, 2, 1]]]
    assert B.to_rgb(np.array([[9]], np.uint8), "mono8").tolist() == [[[9, 9, 9]]]


def test_malformed_images_are_rejected():
    Image = STORE.types[B.IMAGE_TYPE]
    short = Image(header=_header(), height=4, width=4, encoding="rgb8", is_bigendian=0, step=12,
                  data=np.zeros(10, np.uint8))
    with pytest.raises(B.BagError, match="malformed"):
        B.image_to_numpy(short)
    odd = Image(header=_header(), height=1, width=1, encoding="yuv422", is_bigendian=0, step=2,
                data=np.zeros(2, np.uint8))
    with pytest.raises(B.BagError, match="unsupported encoding 'yuv422'"):
        B.image_to_numpy(odd)
    with pytest.raises(B.BagError, match="not a class-id image"):
        B.label_to_classes(np.zeros((2, 2), np.uint8), "rgb8", None)
    with pytest.raises(B.BagError, match="not a colour image"):
        B.to_rgb(np.zeros((2, 2), np.uint16), "16UC1")


def test_label_ignore_values():
    lab = np.array([[0, 65535], [3, 2]], np.uint16)
    assert B.label_to_classes(lab, "16UC1", 65535).tolist() == [[0, IGNORE], [3, 2]]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_write_and_pair_frames(tmp_path, storage):
    rng = np.random.default_rng(1)
    frames = [(10**9 + i * 10**8, rng.integers(0, 255, (6, 8, 3), dtype=np.uint8),
               rng.integers(0, 4, (6, 8)).astype(np.uint16) if i != 1 else None)
              for i in range(4)]
    path = B.write_image_bag(tmp_path / "in", frames, storage=storage)
    assert B.bag_storage(path) == storage
    assert not (tmp_path / "in.partial").exists()
    reader = B.open_reader(path)
    stats = {}
    got = list(B.iter_frames(reader, "/camera/image", "/camera/labels", stats))
    # frame 1 has no label: skipped and counted
    assert [f.key for f in got] == [f"{s:020d}" for s, _, l in frames if l is not None]
    assert stats == {"images": 4, "labels": 3, "unmatched_images": 1, "unmatched_labels": 0}
    for f, (s, rgb, lab) in zip(got, [fr for fr in frames if fr[2] is not None]):
        assert np.array_equal(B.frame_rgb(f), rgb)
        assert np.array_equal(B.image_to_numpy(f.label), lab)
    with pytest.raises(B.BagError, match=r"'/nope' is not in the bag; it has: \['/camera/image"):
        list(B.iter_frames(reader, "/nope"))
    reader.close()


def test_unreadable_bag(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk/metadata.yaml").write_text("::: not yaml")
    with pytest.raises(B.BagError, match="cannot open bag"):
        B.open_reader(tmp_path / "junk")
    with pytest.raises(B.BagError, match="does not exist"):
        B.open_reader(tmp_path / "missing")


def test_make_bag_from_folders(tmp_path, capsys):
    import cv2

    from ovseg_ros.eval.cli import main

    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), np.full((4, 6, 3), 40 * i, np.uint8))
        cv2.imwrite(str(tmp_path / "lab" / f"{i}.png"), np.full((4, 6), i, np.uint8))
    assert main(["make-bag", "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"),
                 "--out", str(tmp_path / "bag"), "--rate", "5", "--storage", "mcap"]) == 0
    reader = B.open_reader(tmp_path / "bag")
    got = list(B.iter_frames(reader, "/camera/image", "/camera/labels"))
    assert [int(f.key) for f in got] == [10**9, 10**9 + 2 * 10**8, 10**9 + 4 * 10**8]
    assert [int(B.image_to_numpy(f.label)[0, 0]) for f in got] == [0, 1, 2]
    assert got[0].label.encoding == "16UC1"
    reader.close()
    (tmp_path / "lab" / "2.png").unlink()
    assert main(["make-bag", "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"),
                 "--out", str(tmp_path / "bag2")]) == 2
    assert "has no label file" in capsys.readouterr().err
    assert not (tmp_path / "bag2").exists() and not (tmp_path / "bag2.partial").exists()



def test_make_bag_maps_folder_ignore_value_to_unlabelled(tmp_path):
    """Regression: 8-bit label PNGs mark 'ignore' with 255 (as `dataset --kind folder`
    assumes); make-bag kept 255 in the 16UC1 labels, so `ovseg-eval bag` (which ignores
    65535 for 16UC1) failed with 'class ids [255] outside [0, n)'."""
    import cv2

    from ovseg_ros.eval.cli import main

    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.full((4, 6, 3), 90, np.uint8))
    lab = np.zeros((4, 6), np.uint8)
    lab[0] = 255
    lab[1] = 7
    cv2.imwrite(str(tmp_path / "lab" / "a.png"), lab)
    for extra, top in (([], 65535), (["--ignore-index", "-1"], 255),
                       (["--ignore-index", "7"], 255)):
        out = tmp_path / f"bag{len(extra)}{extra[-1] if extra else ''}"
        assert main(["make-bag", "--images", str(tmp_path / "img"), "--labels",
                     str(tmp_path / "lab"), "--out", str(out), *extra]) == 0
        reader = B.open_reader(out)
        got = B.image_to_numpy(next(iter(B.iter_frames(reader, "/camera/image",
                                                        "/camera/labels"))).label)
        reader.close()
        assert int(got[0, 0]) == top and int(got[2, 0]) == 0
        assert int(got[1, 0]) == (65535 if extra[-1:] == ["7"] else 7)

def test_compressed_image_frames():
    import cv2

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :4] = (255, 0, 0)
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    msg = STORE.types[B.COMPRESSED_TYPE](header=_header(), format="png",
                                         data=np.frombuffer(png.tobytes(), np.uint8))
    frame = B.Frame(index=0, key="5", timestamp=5, msg=msg)
    assert np.array_equal(B.frame_rgb(frame), rgb)
    bad = STORE.types[B.COMPRESSED_TYPE](header=_header(), format="jpeg",
                                         data=np.zeros(10, np.uint8))
    with pytest.raises(B.BagError, match="could not be decoded"):
        B.frame_rgb(B.Frame(index=0, key="5", timestamp=5, msg=bad))
