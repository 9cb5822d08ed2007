"""The generated ROS 2 interfaces (msg/, srv/): import, contents, wire format, DDS.

Needs `make interfaces` (which `make test` runs first). The service test starts
two separate Python processes that talk over FastDDS on loopback.
"""
import json
import os
import random
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

try:
    from ovseg_ros.msg import ClassInfo, Segment, Segments, Vocabulary
    from ovseg_ros.srv import SetVocabulary
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        f"ovseg_ros.msg / ovseg_ros.srv are not built ({exc}); run `make interfaces` "
        "(docs/package_structure.md)") from exc

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import RegionOfInterest  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

# The interface contract (docs/package_structure.md); changing a field is an API change.
EXPECTED_FIELDS = {
    ClassInfo: {"id": "uint16", "name": "string", "synonyms": "sequence<string>",
                "is_thing": "boolean"},
    Vocabulary: {"header": "std_msgs/Header", "version": "uint32", "engine": "string",
                 "random_weights": "boolean", "classes": "sequence<ovseg_ros/ClassInfo>"},
    Segment: {"id": "int32", "class_id": "uint16", "class_name": "string",
              "is_thing": "boolean", "score": "float", "area": "uint32",
              "bbox": "sensor_msgs/RegionOfInterest"},
    Segments: {"header": "std_msgs/Header", "vocabulary_version": "uint32",
               "segments": "sequence<ovseg_ros/Segment>"},
    SetVocabulary.Request: {"classes": "sequence<string>", "is_thing": "sequence<boolean>"},
    SetVocabulary.Response: {"success": "boolean", "message": "string", "version": "uint32",
                             "classes": "sequence<ovseg_ros/ClassInfo>"},
}


def test_generated_modules_extend_the_source_package():
    import ovseg_ros
    import ovseg_ros.msg

    # The library API and the generated modules live in one package.
    assert callable(ovseg_ros.load_segmenter)
    src = (REPO / "ovseg_ros").resolve()
    gen = Path(ovseg_ros.msg.__file__).resolve()
    # A hand-made ovseg_ros/msg/ in the source tree would shadow the generated one.
    assert src not in gen.parents, f"{gen} shadows the rosidl-generated ovseg_ros.msg"
    assert "from ovseg_ros.msg._class_info import ClassInfo" in gen.read_text()
    gen_pkg = gen.parent.parent
    if Path(ovseg_ros.__file__).resolve().parent != gen_pkg:
        # `make interfaces` layout (interfaces apart from the sources): the
        # generated tree must carry no __init__.py that could hide the library
        # and no second "ovseg_ros" distribution.
        assert not (gen_pkg / "__init__.py").exists()
        assert not list(gen_pkg.parent.glob("ovseg_ros-*.egg-info"))


@pytest.mark.parametrize("msg_type", list(EXPECTED_FIELDS), ids=lambda t: t.__name__)
def test_fields_match_the_contract(msg_type):
    assert msg_type.get_fields_and_field_types() == EXPECTED_FIELDS[msg_type]


def test_unlabeled_constant_matches_the_library():
    from ovseg_ros import UNLABELED

    assert ClassInfo.UNLABELED == UNLABELED == 65535


def test_messages_round_trip_through_cdr():
    classes = [ClassInfo(id=0, name="person", synonyms=["person"], is_thing=True),
               ClassInfo(id=1, name="sofa", synonyms=["sofa", "couch"], is_thing=True),
               ClassInfo(id=2, name="floor", synonyms=["floor"], is_thing=False)]
    vocab = Vocabulary(header=Header(stamp=Time(sec=12, nanosec=5), frame_id="camera"),
                       version=3, engine="proxyclip", random_weights=True, classes=classes)
    segs = Segments(header=vocab.header, vocabulary_version=3, segments=[
        Segment(id=1, class_id=1, class_name="sofa", is_thing=True, score=0.75, area=1200,
                bbox=RegionOfInterest(x_offset=10, y_offset=20, width=40, height=30)),
        Segment(id=2, class_id=2, class_name="floor", is_thing=False, score=0.5, area=9000),
    ])
    for msg in (vocab, segs):
        data = serialize_message(msg)
        assert isinstance(data, bytes) and len(data) > 0
        back = deserialize_message(data, type(msg))
        assert back == msg
    back = deserialize_message(serialize_message(segs), Segments)
    assert back.segments[0].bbox.width == 40 and back.segments[1].class_name == "floor"
    assert deserialize_message(serialize_message(vocab), Vocabulary).classes[1].synonyms == \
        ["sofa", "couch"]


def test_field_types_are_checked_on_request():
    # Kilted checks field values only with check_fields=True (or ROS_PYTHON_CHECK_FIELDS=1).
    with pytest.raises(AssertionError):
        ClassInfo(id=70000, check_fields=True)  # uint16 overflow
    with pytest.raises(AssertionError):
        Segment(area=-1, check_fields=True)     # uint32
    with pytest.raises(AssertionError):
        SetVocabulary.Request(classes="person", check_fields=True)  # must be a list of strings
    assert ClassInfo(id=65535, check_fields=True).id == 65535


# --- two processes over DDS -----------------------------------------------------

SERVER = r"""
import sys, time
import rclpy
from ovseg_ros.msg import ClassInfo
from ovseg_ros.srv import SetVocabulary

SERVICE, EXPECTED_CALLS = sys.argv[1], int(sys.argv[2])
DEADLINE = time.monotonic() + float(sys.argv[3])
calls = []

def handle(req, resp):
    calls.append(req)
    if req.is_thing and len(req.is_thing) != len(req.classes):
        resp.success = False
        resp.message = (f"is_thing has {len(req.is_thing)} entries for {len(req.classes)} "
                        "classes; give one per class or leave it empty")
        return resp
    resp.classes = [ClassInfo(id=i, name=c.split(",")[0].strip(),
                              synonyms=[s.strip() for s in c.split(",")],
                              is_thing=bool(req.is_thing[i]) if req.is_thing else True)
                    for i, c in enumerate(req.classes)]
    resp.success, resp.version = True, len(calls)
    resp.message = f"applied {len(req.classes)} classes"
    return resp

rclpy.init()
node = rclpy.create_node("ovseg_test_vocab_server")
srv = node.create_service(SetVocabulary, SERVICE, handle)
print("READY", flush=True)
try:
    while len(calls) < EXPECTED_CALLS and time.monotonic() < DEADLINE:
        rclpy.spin_once(node, timeout_sec=0.1)
    # Let the last response leave before the node goes away.
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
finally:
    node.destroy_node()
    rclpy.shutdown()
sys.exit(0 if len(calls) == EXPECTED_CALLS else 3)
"""

CLIENT = r"""
import json, sys, time
import rclpy
from ovseg_ros.srv import SetVocabulary

SERVICE, TIMEOUT = sys.argv[1], float(sys.argv[2])
rclpy.init()
node = rclpy.create_node("ovseg_test_vocab_client")
cli = node.create_client(SetVocabulary, SERVICE)
out = []
try:
    if not cli.wait_for_service(timeout_sec=TIMEOUT):
        print("service not available", file=sys.stderr)
        sys.exit(2)
    for classes, is_thing in ((["person", "sofa, couch", "floor"], [True, True, False]),
                              (["person", "floor"], [True])):
        fut = cli.call_async(SetVocabulary.Request(classes=classes, is_thing=is_thing))
        rclpy.spin_until_future_complete(node, fut, timeout_sec=TIMEOUT)
        if not fut.done():
            print("no response", file=sys.stderr)
            sys.exit(4)
        r = fut.result()
        out.append({"success": r.success, "message": r.message, "version": r.version,
                    "classes": [[c.id, c.name, list(c.synonyms), c.is_thing] for c in r.classes]})
finally:
    node.destroy_node()
    rclpy.shutdown()
print(json.dumps(out))
"""


def _dds_env():
    env = dict(os.environ)
    # Other engineers run DDS tests on this machine at the same time.
    env["ROS_DOMAIN_ID"] = str(random.randint(1, 100))
    env["FASTDDS_BUILTIN_TRANSPORTS"] = "DEFAULT"   # small messages; see test/node_harness.py
    env.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
    return env


def test_set_vocabulary_between_two_processes(tmp_path):
    server_py, client_py = tmp_path / "server.py", tmp_path / "client.py"
    server_py.write_text(textwrap.dedent(SERVER))
    client_py.write_text(textwrap.dedent(CLIENT))
    service = f"/ovseg_test_{uuid.uuid4().hex[:8]}/set_vocabulary"
    env = _dds_env()
    server = subprocess.Popen([sys.executable, str(server_py), service, "2", "60"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "READY", server.stderr.read()
        client = subprocess.run([sys.executable, str(client_py), service, "30"], env=env,
                                capture_output=True, text=True, timeout=90)
        assert client.returncode == 0, client.stderr
        server_out, server_err = server.communicate(timeout=30)
        assert server.returncode == 0, server_err
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)

    ok, bad = json.loads(client.stdout.strip().splitlines()[-1])
    assert ok["success"] is True and ok["version"] == 1
    assert ok["message"] == "applied 3 classes"
    assert ok["classes"] == [[0, "person", ["person"], True],
                             [1, "sofa", ["sofa", "couch"], True],
                             [2, "floor", ["floor"], False]]
    assert bad["success"] is False and bad["classes"] == []
    assert "is_thing has 1 entries for 2 classes" in bad["message"]
