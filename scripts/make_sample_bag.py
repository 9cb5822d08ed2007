#!/usr/bin/env python3
"""Write the sample rosbag2 (MCAP) used by `make demo` and the node tests.

Real photographs bundled with scikit-image (astronaut, coffee, chelsea, rocket,
stereo_motorcycle), scaled and centre-cropped to camera sizes, published as
three cameras in the encodings the node accepts, plus camera_info:

    /cam_vga/image_raw              sensor_msgs/Image            rgb8   640x480
    /cam_vga/image_raw/compressed   sensor_msgs/CompressedImage  jpeg   640x480
    /cam_vga/camera_info            sensor_msgs/CameraInfo
    /cam_hd/image_raw               sensor_msgs/Image            bgr8   1280x720
    /cam_hd/camera_info             sensor_msgs/CameraInfo
    /cam_mono/image_raw             sensor_msgs/Image            mono8  640x480
    /cam_mono/camera_info           sensor_msgs/CameraInfo

Each photo is shown for FRAMES_PER_PHOTO frames with a slow pan (so frames
differ like a moving camera), 10 Hz.

A second, small bag next to it (``labelled_bag``) is for evaluation out of the
box: SYNTHETIC scenes (drawn shapes, not photographs) with exact ground truth,

    /synthetic/image_raw   sensor_msgs/Image  rgb8   320x240
    /synthetic/labels      sensor_msgs/Image  16UC1  class id per pixel

and their class file ``labelled_bag_classes.txt`` (line i = class id i):

    ovseg-eval bag --bag data/sample/labelled_bag --image-topic /synthetic/image_raw \
        --label-topic /synthetic/labels --classes data/sample/labelled_bag_classes.txt \
        --config config/demo_tiny.yaml --out out/eval_sample

A third bag (``rgbd_bag``) is a SYNTHETIC RGB-D sequence with exact geometry
(ovseg_ros/testing/rgbd_scene.py: a wall, a floor and three boards, known K), the depth
registered to colour with the same stamps (an aligned driver), for the 3D outputs:

    /rgbd/image_raw    sensor_msgs/Image       rgb8   640x480
    /rgbd/depth        sensor_msgs/Image       16UC1  millimetres (registered)
    /rgbd/depth_32f    sensor_msgs/Image       32FC1  metres, the same depth
    /rgbd/camera_info  sensor_msgs/CameraInfo  plumb_bob, D = 0
    /rgbd/labels       sensor_msgs/Image       16UC1  class id per pixel

with its ground truth ``rgbd_bag_truth.json`` (camera, classes, board centres per frame)
and class file ``rgbd_bag_classes.txt``:

    ovseg-eval infer-bag --bag data/sample/rgbd_bag --image-topic /rgbd/image_raw ...

Every topic records the QoS it is offered with (offered_qos_profiles, as
rosbag2 does): reliable, so `ros2 bag play` repeats every frame and a
best-effort subscriber matches too. Cached: a manifest records the script's
hash and settings; up-to-date bags are not rewritten (use --force).

    python scripts/make_sample_bag.py [--out data/sample/sample_bag] [--force]
        [--labelled-only | --rgbd-only]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "data" / "sample" / "sample_bag"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle")
FRAMES_PER_PHOTO = 2
RATE_HZ = 10.0
CAMERAS = {   # name: (width, height, encoding, frame_id, with compressed topic)
    "cam_vga": (640, 480, "rgb8", "cam_vga_optical", True),
    "cam_hd": (1280, 720, "bgr8", "cam_hd_optical", False),
    "cam_mono": (640, 480, "mono8", "cam_mono_optical", False),
}
#: the synthetic labelled scenes: classes (id = index), frames, size
SYNTH_CLASSES = ("sky", "grass", "road", "building", "tree")
SYNTH_FRAMES = 6
SYNTH_SIZE = (320, 240)
RGBD_FRAMES = 6
SETTINGS = {"rgbd_frames": RGBD_FRAMES,
            "photos": PHOTOS, "frames_per_photo": FRAMES_PER_PHOTO, "rate_hz": RATE_HZ,
            "cameras": {k: list(v) for k, v in CAMERAS.items()},
            "synthetic": {"classes": SYNTH_CLASSES, "frames": SYNTH_FRAMES,
                          "size": SYNTH_SIZE}}


def load_photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):   # stereo_motorcycle returns (left, right, disparity)
        img = img[0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def camera_view(photo: np.ndarray, width: int, height: int, pan: float) -> np.ndarray:
    """Scale the photo to cover width x height (+8 % margin) and crop; ``pan`` in [0, 1]
    slides the crop window to imitate camera motion."""
    h, w = photo.shape[:2]
    scale = max(width / w, height / h) * 1.08
    sw, sh = int(round(w * scale)), int(round(h * scale))
    big = cv2.resize(photo, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1
                     else cv2.INTER_CUBIC)
    x0 = int(round((sw - width) * pan))
    y0 = (sh - height) // 2
    return np.ascontiguousarray(big[y0:y0 + height, x0:x0 + width])


def synthetic_scene(k: int, width: int, height: int):
    """(rgb, labels) of SYNTHETIC scene k: sky, a road between grass, buildings and trees
    drawn as flat shapes with texture noise; labels = the class id of every pixel (exact,
    no anti-aliasing). Seeded: the same k gives the same scene."""
    rng = np.random.default_rng(1000 + k)
    ids = {name: i for i, name in enumerate(SYNTH_CLASSES)}
    lab = np.full((height, width), ids["sky"], np.uint16)
    horizon = int(height * rng.uniform(0.40, 0.55))
    lab[horizon:] = ids["grass"]
    # a road in perspective from the bottom edge to a vanishing point on the horizon
    vx = int(width * rng.uniform(0.35, 0.65))
    road = np.array([[vx - 4, horizon], [vx + 4, horizon],
                     [int(width * rng.uniform(0.75, 0.95)), height - 1],
                     [int(width * rng.uniform(0.05, 0.25)), height - 1]], np.int32)
    cv2.fillPoly(lab, [road], ids["road"])
    for _ in range(int(rng.integers(1, 4))):          # buildings standing on the horizon
        w = int(rng.integers(width // 10, width // 4))
        x0 = int(rng.integers(0, width - w))
        top = int(rng.integers(height // 10, max(horizon - 20, height // 10 + 1)))
        lab[top:horizon + 2, x0:x0 + w] = ids["building"]
    for _ in range(int(rng.integers(1, 3))):          # trees: trunk + crown
        cx = int(rng.integers(width // 12, width - width // 12))
        r = int(rng.integers(height // 14, height // 8))
        base = horizon + int(rng.integers(4, 20))
        cv2.rectangle(lab, (cx - r // 4, base - 2 * r), (cx + r // 4, base), ids["tree"], -1)
        cv2.circle(lab, (cx, base - 2 * r), r, ids["tree"], -1)
    colours = np.array([[120, 170, 235], [70, 150, 60], [90, 90, 95], [170, 150, 130],
                        [30, 100, 40]], np.float32)
    rgb = colours[lab]
    rgb[..., :] += rng.normal(0, 12, (height, width, 1))           # texture
    rgb[:horizon] += np.linspace(25, -10, horizon)[:, None, None] * (lab[:horizon, :, None] == 0)
    return np.clip(rgb, 0, 255).astype(np.uint8), lab


def write_labelled_bag(out: Path) -> dict:
    """The small SYNTHETIC labelled bag (MCAP) and its class file."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    sys.path.insert(0, str(ROOT))
    from ovseg_ros.eval.bags import playback_image_qos

    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    Header, Time, Image = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"], \
        T["sensor_msgs/msg/Image"]
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    w, h = SYNTH_SIZE
    t0 = 1_700_000_100 * 10**9
    qos = [playback_image_qos()]
    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
    with writer:
        ci = writer.add_connection("/synthetic/image_raw", "sensor_msgs/msg/Image", typestore=ts,
                                   offered_qos_profiles=qos)
        cl = writer.add_connection("/synthetic/labels", "sensor_msgs/msg/Image", typestore=ts,
                                   offered_qos_profiles=qos)
        for k in range(SYNTH_FRAMES):
            rgb, lab = synthetic_scene(k, w, h)
            t = t0 + int(k * 1e9 / RATE_HZ)
            header = Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9),
                            frame_id="synthetic_camera")
            img = Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0,
                        step=w * 3, data=rgb.reshape(-1))
            lbl = Image(header=header, height=h, width=w, encoding="16UC1", is_bigendian=0,
                        step=w * 2, data=np.ascontiguousarray(lab, "<u2").view(np.uint8)
                        .reshape(-1))
            writer.write(ci, t, ts.serialize_cdr(img, "sensor_msgs/msg/Image"))
            writer.write(cl, t, ts.serialize_cdr(lbl, "sensor_msgs/msg/Image"))
    (out.parent / (out.name + "_classes.txt")).write_text(
        "# SYNTHETIC sample scenes (scripts/make_sample_bag.py): line i = class id i\n"
        + "\n".join(SYNTH_CLASSES) + "\n")
    return {"/synthetic/image_raw": SYNTH_FRAMES, "/synthetic/labels": SYNTH_FRAMES}


def write_rgbd_bag(out: Path) -> dict:
    """The SYNTHETIC RGB-D bag (MCAP), its ground truth and class file."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    sys.path.insert(0, str(ROOT))
    from ovseg_ros.core import image_codec
    from ovseg_ros.eval.bags import playback_image_qos
    from ovseg_ros.testing import rgbd_scene as S

    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    Image, CInfo, ROI = T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CameraInfo"], \
        T["sensor_msgs/msg/RegionOfInterest"]
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = 1_700_000_200 * 10**9
    qos = [playback_image_qos()]
    topics = {"image": ("/rgbd/image_raw", "sensor_msgs/msg/Image"),
              "depth": ("/rgbd/depth", "sensor_msgs/msg/Image"),
              "depth_32f": ("/rgbd/depth_32f", "sensor_msgs/msg/Image"),
              "info": ("/rgbd/camera_info", "sensor_msgs/msg/CameraInfo"),
              "labels": ("/rgbd/labels", "sensor_msgs/msg/Image")}
    k = S.camera_k()
    p = np.concatenate([k, np.zeros((3, 1))], axis=1)

    def image(header, arr, enc):
        step, data = image_codec.encode(arr, enc)
        return Image(header=header, height=arr.shape[0], width=arr.shape[1], encoding=enc,
                     is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))

    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        conns = {key: writer.add_connection(topic, mt, typestore=ts, offered_qos_profiles=qos)
                 for key, (topic, mt) in topics.items()}
        for i in range(RGBD_FRAMES):
            rgb, mm, sem, _, _ = S.render(i)
            t = t0 + int(i * 1e9 / RATE_HZ)
            header = Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9),
                            frame_id="rgbd_color_optical")
            info = CInfo(header=header, height=S.HEIGHT, width=S.WIDTH,
                         distortion_model="plumb_bob", d=np.zeros(5), k=k.reshape(-1),
                         r=np.eye(3).reshape(-1), p=p.reshape(-1), binning_x=0, binning_y=0,
                         roi=ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            msgs = {"image": image(header, rgb, "rgb8"), "depth": image(header, mm, "16UC1"),
                    "depth_32f": image(header, S.depth_32f(mm), "32FC1"), "info": info,
                    "labels": image(header, sem, "16UC1")}
            for key, msg in msgs.items():
                writer.write(conns[key], t, ts.serialize_cdr(msg, topics[key][1]))
    (out.parent / (out.name + "_truth.json")).write_text(
        json.dumps(S.ground_truth(RGBD_FRAMES), indent=1))
    (out.parent / (out.name + "_classes.txt")).write_text(
        "# SYNTHETIC RGB-D scenes (scripts/make_sample_bag.py): line i = class id i\n"
        + "\n".join(S.CLASSES) + "\n")
    return {topic: RGBD_FRAMES for topic, _ in topics.values()}


def rgbd_path(out: Path) -> Path:
    """The RGB-D bag beside the sample bag (data/sample/rgbd_bag)."""
    return out.parent / "rgbd_bag"


def script_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def labelled_path(out: Path) -> Path:
    """The labelled bag beside the sample bag (data/sample/labelled_bag)."""
    return out.parent / "labelled_bag"


def is_up_to_date(out: Path, bags=None) -> bool:
    manifest = out.parent / (out.name + ".json")
    bags = bags if bags is not None else (out, labelled_path(out), rgbd_path(out))
    if not all((b / "metadata.yaml").exists() for b in bags) or not manifest.exists():
        return False
    try:
        data = json.loads(manifest.read_text())
    except ValueError:
        return False
    return data.get("script_hash") == script_hash() and data.get("settings") == json.loads(
        json.dumps(SETTINGS))


def write_bag(out: Path) -> dict:
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    Image, CInfo = T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CameraInfo"]
    Compressed, ROI = T["sensor_msgs/msg/CompressedImage"], T["sensor_msgs/msg/RegionOfInterest"]

    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    photos = {name: load_photo(name) for name in PHOTOS}
    counts = {}
    t0 = 1_700_000_000 * 10**9     # a fixed start time: the bag is reproducible
    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
    # zstd-compressed MCAP chunks: readable by ros2 bag, Foxglove and rosbags
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    sys.path.insert(0, str(ROOT))
    from ovseg_ros.core import image_codec
    from ovseg_ros.eval.bags import playback_image_qos

    qos = [playback_image_qos()]
    with writer:
        conns = {}
        for cam, (w, h, enc, frame, comp) in CAMERAS.items():
            conns[(cam, "image")] = writer.add_connection(
                f"/{cam}/image_raw", "sensor_msgs/msg/Image", typestore=ts,
                offered_qos_profiles=qos)
            conns[(cam, "info")] = writer.add_connection(
                f"/{cam}/camera_info", "sensor_msgs/msg/CameraInfo", typestore=ts,
                offered_qos_profiles=qos)
            if comp:
                conns[(cam, "compressed")] = writer.add_connection(
                    f"/{cam}/image_raw/compressed", "sensor_msgs/msg/CompressedImage",
                    typestore=ts, offered_qos_profiles=qos)
        frame_idx = 0
        for name in PHOTOS:
            for k in range(FRAMES_PER_PHOTO):
                pan = 0.5 + 0.5 * (k / max(FRAMES_PER_PHOTO - 1, 1) - 0.5)
                for ci, (cam, (w, h, enc, frame_id, comp)) in enumerate(CAMERAS.items()):
                    # cameras a few ms apart, like unsynchronised drivers
                    t = t0 + int(frame_idx * 1e9 / RATE_HZ) + ci * 3_000_000
                    stamp = Time(sec=t // 10**9, nanosec=t % 10**9)
                    header = Header(stamp=stamp, frame_id=frame_id)
                    rgb = camera_view(photos[name], w, h, pan)
                    step, data = image_codec.encode(image_codec.from_rgb(rgb, enc), enc)
                    img = Image(header=header, height=h, width=w, encoding=enc, is_bigendian=0,
                                step=step, data=np.frombuffer(data, np.uint8))
                    f = float(w)   # ~ 60 degree horizontal field of view
                    info = CInfo(header=header, height=h, width=w, distortion_model="plumb_bob",
                                 d=np.zeros(5), k=np.array([f, 0, w / 2, 0, f, h / 2, 0, 0, 1.0]),
                                 r=np.eye(3).reshape(-1),
                                 p=np.array([f, 0, w / 2, 0, 0, f, h / 2, 0, 0, 0, 1.0, 0]),
                                 binning_x=0, binning_y=0,
                                 roi=ROI(x_offset=0, y_offset=0, height=0, width=0,
                                         do_rectify=False))
                    writer.write(conns[(cam, "image")], t,
                                 ts.serialize_cdr(img, "sensor_msgs/msg/Image"))
                    writer.write(conns[(cam, "info")], t,
                                 ts.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
                    counts[f"/{cam}/image_raw"] = counts.get(f"/{cam}/image_raw", 0) + 1
                    if comp:
                        jpeg = image_codec.encode_compressed(rgb, "jpeg", quality=90)
                        cmsg = Compressed(header=header, format="rgb8; jpeg compressed bgr8",
                                          data=np.frombuffer(jpeg, np.uint8))
                        writer.write(conns[(cam, "compressed")], t + 1,
                                     ts.serialize_cdr(cmsg, "sensor_msgs/msg/CompressedImage"))
                        key = f"/{cam}/image_raw/compressed"
                        counts[key] = counts.get(key, 0) + 1
                frame_idx += 1
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bag directory to write")
    ap.add_argument("--force", action="store_true", help="rewrite even if up to date")
    ap.add_argument("--labelled-only", action="store_true",
                    help="write only the SYNTHETIC labelled bag (next to --out)")
    ap.add_argument("--rgbd-only", action="store_true",
                    help="write only the SYNTHETIC RGB-D bag (next to --out)")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    labelled = labelled_path(out)
    if args.rgbd_only:
        counts = write_rgbd_bag(rgbd_path(out))
        print(f"wrote {rgbd_path(out)}: " + ", ".join(f"{k}: {v}" for k, v in
                                                     sorted(counts.items())))
        return 0
    bags = (labelled,) if args.labelled_only else (out, labelled, rgbd_path(out))
    if not args.force and is_up_to_date(out, bags):
        print("sample bags up to date: " + ", ".join(str(b) for b in bags))
        return 0
    counts = {} if args.labelled_only else write_bag(out)
    counts.update(write_labelled_bag(labelled))
    if not args.labelled_only:
        counts.update(write_rgbd_bag(rgbd_path(out)))
    size = sum(p.stat().st_size for b in bags for p in b.rglob("*") if p.is_file())
    manifest = {"script_hash": script_hash(), "settings": SETTINGS, "messages": counts,
                "bytes": size, "bags": [b.name for b in bags]}
    (out.parent / (out.name + ".json")).write_text(json.dumps(manifest, indent=2))
    print("wrote " + ", ".join(str(b) for b in bags) + f" ({size / 1e6:.1f} MB): " +
          ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    print(f"  {labelled.name} holds SYNTHETIC scenes with exact labels "
          f"(classes: {labelled.name}_classes.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
