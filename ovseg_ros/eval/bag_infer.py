"""Bag -> bag inference: every frame of an image topic, written back with the label topics.

The output bag holds every original message unchanged plus, for each image
message (same bag timestamp and header as the image, so stamps match):

    <prefix>/<topic>    one topic per row of the outputs table (``core/outputs.py``)
                        whose needs a bag meets: semantic (16UC1, 65535 = unlabelled),
                        panoptic (32SC1, 0 = no segment), confidence (32FC1), colored
                        (rgb8 overlay, RANDOM WEIGHTS banner with random weights), segments
    <prefix>/vocabulary ovseg_ros/msg/Vocabulary (once, before the first result; latched QoS)
    <prefix>/segment_embeddings  ovseg_ros/msg/SegmentEmbeddings (fp16 rows), when
                        ``embeddings.enabled``

With ``tracking.enabled`` the ids are track ids, exactly as the node publishes them (the
same CameraOutputs and Tracker; a stamp going backwards or jumping resets the tracks).

and, when the bag has a registered depth topic for the image topic (``<ns>/depth`` and
``<ns>/camera_info`` beside ``<ns>/<image>``, or ``depth_topic`` / ``camera_info_topic``;
eval/bag_depth.py pairs them by stamp within ``depth_slop``), the outputs table's depth
rows:

    <prefix>/points       sensor_msgs/PointCloud2 (x, y, z, rgb, label, instance)
    <prefix>/segments_3d  ovseg_ros/msg/Segments3D
    <prefix>/markers      visualization_msgs/MarkerArray

Frames without a depth partner, or whose depth is refused (core/depth.py), get no 3D
messages; they are counted under ``depth`` in the result, by reason.

The products are built by ``ovseg_ros.core.camera_outputs.CameraOutputs``, the output
path the node publishes from, so the bag holds what the live node would publish.
Frames are processed in bag order, one by one, none dropped; with the same
engine and weights the output is the same on every run. The bag is written
under ``<out>.partial`` and renamed when complete.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from ..core.camera_outputs import CameraOutputs
from ..core.markers import MarkerPlanner
from ..core.outputs import outputs_for
from ..core.products import embedding_rows
from . import bags_3d
from .bag_depth import BagDepth
from .bags import (COMPRESSED_TYPE, IMAGE_TYPE, BagError, bag_storage, check_topic, frame_rgb,
                   Frame, latched_qos, make_typestore, numpy_to_image, open_reader,
                   rename_storage_files, stamp_ns, storage_plugin)

#: older name, kept for callers of this module
_rename_storage_files = rename_storage_files

#: the rows every bag gets (camera_info stays the input's); the depth rows are added when
#: the bag has registered depth for the image topic
BAG_OUTPUTS = outputs_for(depth=False, embeddings=False, camera_info=False)
OUTPUT_TOPICS = tuple(o.topic for o in BAG_OUTPUTS) + ("vocabulary",)
SEGMENTS_TYPE = "ovseg_ros/msg/Segments"
VOCABULARY_TYPE = "ovseg_ros/msg/Vocabulary"
EMBEDDINGS_TYPE = "ovseg_ros/msg/SegmentEmbeddings"


def vocabulary_msg(store, vocab, header, engine: str, random_weights: bool):
    T = store.types
    classes = [T["ovseg_ros/msg/ClassInfo"](id=i, name=syns[0], synonyms=list(syns),
                                            is_thing=bool(thing))
               for i, (syns, thing) in enumerate(zip(vocab.synonyms, vocab.is_thing))]
    return T[VOCABULARY_TYPE](header=header, version=int(vocab.version), engine=engine,
                              random_weights=bool(random_weights), classes=classes)


def segments_msg(store, products, header):
    """ovseg_ros/msg/Segments from ``FrameProducts.segments`` (as the node publishes it)."""
    T = store.types
    roi = T["sensor_msgs/msg/RegionOfInterest"]
    segs = []
    for s in products.segments:
        x, y, w, h = s["bbox"]
        segs.append(T["ovseg_ros/msg/Segment"](
            id=s["id"], class_id=s["class_id"], class_name=s["class_name"],
            is_thing=s["is_thing"], score=s["score"], area=s["area"],
            bbox=roi(x_offset=x, y_offset=y, height=h, width=w, do_rectify=False)))
    return T[SEGMENTS_TYPE](header=header, vocabulary_version=int(products.vocabulary_version),
                            segments=segs)


def embeddings_msg(store, products, header, space: str):
    """ovseg_ros/msg/SegmentEmbeddings (the node's ``ros/messages.embeddings_msg`` twin)."""
    import numpy as np

    ids, dim, data = embedding_rows(products.embeddings or {})
    return store.types[EMBEDDINGS_TYPE](
        header=header, vocabulary_version=int(products.vocabulary_version), space=space,
        dtype="float16", dim=dim, ids=np.asarray(ids, np.int32),
        data=np.frombuffer(data, np.uint8))


def _bag_message(store, products, row, header, space: str = ""):
    """The rosbags message of one output row (the node's ``product_messages`` twin)."""
    if row.encoding:
        return numpy_to_image(store, getattr(products, row.key), row.encoding, header)
    if row.key == "segments":
        return segments_msg(store, products, header)
    if row.key == "embeddings":
        return embeddings_msg(store, products, header, space)
    raise BagError(f"bag inference cannot write output {row.key!r} ({row.msg_type}) yet")


def infer_bag(segmenter, in_path: Path, out_path: Path, image_topic: str, *,
              prefix: str = "/ovseg", storage: Optional[str] = None, overwrite: bool = False,
              limit: Optional[int] = None, overlay_alpha: float = 0.5,
              progress: bool = True, depth_topic: Optional[str] = None,
              camera_info_topic: Optional[str] = None, depth_slop: float = 0.02,
              cloud_stride: int = 1) -> dict:
    """Run ``segmenter`` over every image of ``image_topic``; returns counts per topic."""
    from rosbags.rosbag2 import Writer
    from tqdm import tqdm

    in_path, out_path = Path(in_path).expanduser(), Path(out_path).expanduser()
    if out_path.resolve() == in_path.resolve():
        raise BagError("the output bag must differ from the input bag")
    if out_path.exists() and not overwrite:
        raise BagError(f"output {out_path} exists; pass --overwrite or choose another path")
    if cloud_stride < 1:
        raise BagError(f"cloud_stride must be >= 1, got {cloud_stride}")
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    store = make_typestore()
    reader = open_reader(in_path)
    tmp = out_path.with_name(out_path.name + ".partial")
    depth_src = None
    try:
        img_conns = check_topic(reader, image_topic, (IMAGE_TYPE, COMPRESSED_TYPE), "image")
        depth_src = BagDepth.open(in_path, reader, image_topic, depth_topic, camera_info_topic,
                                  depth_slop)
        embeddings = bool(segmenter.config["embeddings.enabled"])
        rows = outputs_for(depth=depth_src is not None, embeddings=embeddings,
                           camera_info=False)
        out_topics = {o.key: f"{prefix}/{o.topic}" for o in rows}
        out_topics["vocabulary"] = f"{prefix}/vocabulary"
        counts = {t: 0 for t in out_topics.values()}
        clash = sorted({c.topic for c in reader.connections} & set(out_topics.values()))
        if clash:
            raise BagError(f"the input bag already has output topics {clash}; choose another "
                           "--prefix")
        img_ids = {c.id for c in img_conns}
        total = sum(c.msgcount for c in img_conns)
        if tmp.exists():
            shutil.rmtree(tmp)      # our own leftover from an interrupted run
        writer = Writer(tmp, version=9,
                        storage_plugin=storage_plugin(storage or bag_storage(in_path)))
        writer.open()
        try:
            conn_map = {}
            for c in reader.connections:
                kw = dict(serialization_format=c.ext.serialization_format,
                          offered_qos_profiles=c.ext.offered_qos_profiles)
                if c.digest and c.digest.startswith("RIHS01_") and c.msgdef.data:
                    conn_map[c.id] = writer.add_connection(c.topic, c.msgtype,
                                                           msgdef=c.msgdef.data, rihs01=c.digest,
                                                           **kw)
                else:
                    conn_map[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=store,
                                                           **kw)
            out_conn = {}
            msgtypes = {o.key: o.msg_type for o in rows}
            msgtypes["vocabulary"] = VOCABULARY_TYPE
            for name, topic in out_topics.items():
                msgtype = msgtypes[name]
                qos = [latched_qos()] if name == "vocabulary" else []
                out_conn[name] = writer.add_connection(topic, msgtype, typestore=store,
                                                       offered_qos_profiles=qos)
            vocab = segmenter.vocabulary
            engine_name = str(segmenter.describe().get("engine", segmenter.config["engine"]))
            done = 0
            # tracks like the node (tracking.enabled): same ids, resets on stamp jumps
            outputs = CameraOutputs.from_config(image_topic, segmenter.config,
                                                overlay_alpha=overlay_alpha,
                                                cloud_stride=cloud_stride)
            space = segmenter.embedding_space() if embeddings else ""
            flat_rows = [o for o in rows if o.needs in ("", "embeddings")]
            markers = MarkerPlanner(prefix.strip("/") or "ovseg")
            wanted = {o.key for o in rows}
            bar = tqdm(total=total if limit is None else min(total, limit), disable=not progress,
                       desc="bag inference", unit="img")

            def put(name, msg, msgtype, t):
                writer.write(out_conn[name], t, store.serialize_cdr(msg, msgtype))
                counts[out_topics[name]] += 1

            for conn, t, raw in reader.messages():
                if conn.id in img_ids and limit is not None and done >= limit:
                    break
                writer.write(conn_map[conn.id], t, raw)
                if conn.id not in img_ids:
                    continue
                msg = reader.deserialize(raw, conn.msgtype)
                frame = Frame(index=done, key=str(stamp_ns(msg.header)), timestamp=t, msg=msg)
                rgb = frame_rgb(frame)
                pred = segmenter.predict(rgb)
                hdr = msg.header
                if done == 0:
                    put("vocabulary", vocabulary_msg(store, vocab, hdr, engine_name,
                                                     pred.random_weights), VOCABULARY_TYPE, t)
                # the node's output path (core/camera_outputs.py): same rules, same images
                depth = depth_src.frame_for(msg.header, rgb.shape) if depth_src else None
                prod = outputs.process(pred, rgb, hdr.stamp, wanted=wanted, depth=depth,
                                       frame_id=hdr.frame_id)
                for o in flat_rows:
                    put(o.key, _bag_message(store, prod, o, hdr, space), o.msg_type, t)
                if depth is not None:
                    for name, msgtype, m in bags_3d.messages_3d(store, prod, hdr, depth.stamp,
                                                                markers):
                        put(name, m, msgtype, t)
                done += 1
                bar.update(1)
            bar.close()
        except BaseException:
            writer.close()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        writer.close()
    finally:
        reader.close()
        if depth_src is not None:
            depth_src.close()
    # rosbag2 names the storage files after the directory: give them the final name (and fix
    # the metadata) while the bag is still <out>.partial, then rename the directory
    _rename_storage_files(tmp, tmp.name, out_path.name)
    if out_path.exists():
        shutil.rmtree(out_path)
    tmp.rename(out_path)
    out = {"frames": done, "topics": counts, "output": str(out_path)}
    if depth_src is not None:
        out["depth"] = depth_src.summary()
    return out


__all__ = ["infer_bag", "OUTPUT_TOPICS", "vocabulary_msg", "segments_msg", "embeddings_msg"]
