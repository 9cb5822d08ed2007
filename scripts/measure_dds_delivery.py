#!/usr/bin/env python3
"""Measure how many camera-sized images Fast DDS delivers between two processes.

For every cell (image size x reliability x publisher set-up x subscriber set-up)
a subscriber process and a publisher process are started (rclpy, rmw_fastrtps,
a private random ROS_DOMAIN_ID). The publisher waits until it has matched the
subscriber (discovery), publishes N sensor_msgs/Image frames (rgb8) at the given
rate, keeps running a moment for reliable repairs and exits; the subscriber then
reports how many frames it received. Set-ups:

    defaults    Fast DDS's default transports (shared memory + UDPv4)
    profile     FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_camera.xml
    large_data  FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA (the previous advice)

    python scripts/measure_dds_delivery.py                       # the full table
    python scripts/measure_dds_delivery.py --frames 20 --sizes 640x480 \
        --pairs profile:defaults --reliability best_effort       # one cell
    python scripts/measure_dds_delivery.py --markdown out.md     # also write the table
    python scripts/measure_dds_delivery.py --env ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
                                                   # extra variables for both processes

With --service-calls N it also measures service calls the way `ros2 service call`
makes them: a server process, then N fresh client processes, each waiting for
the service and calling it once (answered within --discovery-timeout or not).

"no discovery" means the publisher never matched the subscriber within
--discovery-timeout seconds. Needs rclpy and sensor_msgs (the venv or a sourced
ROS 2 installation).
"""
from __future__ import annotations

import argparse
import array
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "config" / "fastdds_camera.xml"
SETUPS = ("defaults", "profile", "large_data")
DEFAULT_PAIRS = ("defaults:defaults", "profile:profile", "profile:defaults", "defaults:profile",
                 "large_data:large_data", "large_data:defaults")
TOPIC = "/measure_dds/image"


def setup_env(setup: str, domain: int, profile: Path, extra=()) -> dict:
    env = dict(os.environ)
    for key in ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE",
                "FASTRTPS_DEFAULT_PROFILES_FILE", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                "ROS_LOCALHOST_ONLY", "RMW_FASTRTPS_USE_QOS_FROM_XML"):
        env.pop(key, None)
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env takes KEY=VALUE, got {item!r}")
        env[key] = value
    env["ROS_DOMAIN_ID"] = str(domain)
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    if setup == "profile":
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
        if env.get("ROS_DISTRO", "").lower() in ("humble", "iron", "jazzy"):
            env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)   # Fast DDS 2.x reads this
    elif setup == "large_data":
        env["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"
    elif setup != "defaults":
        raise SystemExit(f"unknown set-up {setup!r}; use one of {SETUPS}")
    return env


def _qos(reliability: str):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    rel = {"best_effort": ReliabilityPolicy.BEST_EFFORT,
           "reliable": ReliabilityPolicy.RELIABLE}[reliability]
    # keep last 5: what camera drivers typically offer (sensor-data QoS depth)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=rel,
                      durability=DurabilityPolicy.VOLATILE)


def run_subscriber(args) -> int:
    """Count frames until stdin closes, then print one JSON line."""
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("measure_dds_sub")
    count = {"n": 0, "bytes": 0}

    def cb(data):
        count["n"] += 1
        count["bytes"] = len(data)
    sub = node.create_subscription(Image, TOPIC, cb, _qos(args.reliability), raw=True)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    print("ready", flush=True)
    saw_publisher = False
    while not done.is_set():
        ex.spin_once(timeout_sec=0.02)
        saw_publisher = saw_publisher or sub.get_publisher_count() > 0
    print(json.dumps({"received": count["n"], "msg_bytes": count["bytes"],
                      "saw_publisher": saw_publisher}), flush=True)
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown()
    return 0


def run_publisher(args) -> int:
    import rclpy
    from sensor_msgs.msg import Image

    w, h = (int(v) for v in args.size.split("x"))
    rclpy.init()
    node = rclpy.create_node("measure_dds_pub")
    pub = node.create_publisher(Image, TOPIC, _qos(args.reliability))
    end = time.monotonic() + args.discovery_timeout
    while pub.get_subscription_count() == 0 and time.monotonic() < end:
        time.sleep(0.05)
    matched = pub.get_subscription_count() > 0
    sent = 0
    if matched:
        time.sleep(0.5)   # let the subscriber's side of the match settle too
        msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
        msg.data = array.array("B", bytes(w * h * 3))
        period = 1.0 / args.rate
        t0 = time.monotonic()
        for i in range(args.frames):
            delay = t0 + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            msg.header.frame_id = str(i)
            pub.publish(msg)
            sent += 1
        time.sleep(args.linger)   # reliable: repairs of the last frames
    print(json.dumps({"matched": matched, "sent": sent}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def run_server(args) -> int:
    """A std_srvs/Trigger server until stdin closes."""
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_srvs.srv import Trigger

    rclpy.init()
    node = rclpy.create_node("measure_dds_server")

    def cb(request, response):
        response.success = True
        return response
    node.create_service(Trigger, "/measure_dds/trigger", cb)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    print("ready", flush=True)
    while not done.is_set():
        ex.spin_once(timeout_sec=0.02)
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown()
    return 0


def run_caller(args) -> int:
    """One call, as `ros2 service call` makes it: a new process, wait, call, exit."""
    import rclpy
    from std_srvs.srv import Trigger

    rclpy.init()
    node = rclpy.create_node("measure_dds_caller")
    cli = node.create_client(Trigger, "/measure_dds/trigger")
    ok = False
    end = time.monotonic() + args.discovery_timeout
    if cli.wait_for_service(timeout_sec=args.discovery_timeout):
        fut = cli.call_async(Trigger.Request())
        while not fut.done() and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        ok = fut.done() and fut.result().success
    print(json.dumps({"answered": bool(ok)}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def measure_services(args, server_setup: str, client_setup: str, profile: Path) -> dict:
    domain = random.Random().randint(120, 200)
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ["--discovery-timeout", str(args.discovery_timeout)]
    extra = getattr(args, "env", None) or ()
    srv = subprocess.Popen(me + ["--role", "server"] + common,
                           env=setup_env(server_setup, domain, profile, extra),
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    answered = 0
    try:
        if srv.stdout.readline().strip() != "ready":
            raise RuntimeError(f"server did not start: {srv.stderr.read()[-2000:]}")
        for _ in range(args.service_calls):
            try:
                r = subprocess.run(me + ["--role", "call"] + common,
                                   env=setup_env(client_setup, domain, profile, extra),
                                   capture_output=True, text=True,
                                   timeout=args.discovery_timeout + 30)
                answered += bool(_json_line(r.stdout).get("answered"))
            except subprocess.TimeoutExpired:   # a hung client counts as unanswered
                pass
        srv.communicate(input="", timeout=30)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    return {"server": server_setup, "client": client_setup, "calls": args.service_calls,
            "answered": answered}


def _json_line(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def measure_cell(args, size: str, reliability: str, pub_setup: str, sub_setup: str,
                 profile: Path) -> dict:
    domain = random.Random().randint(120, 200)
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ["--size", size, "--reliability", reliability, "--frames", str(args.frames),
              "--rate", str(args.rate), "--discovery-timeout", str(args.discovery_timeout),
              "--linger", str(args.linger)]
    extra = getattr(args, "env", None) or ()
    sub = subprocess.Popen(me + ["--role", "sub"] + common,
                           env=setup_env(sub_setup, domain, profile, extra),
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        if sub.stdout.readline().strip() != "ready":
            raise RuntimeError(f"subscriber did not start: {sub.stderr.read()[-2000:]}")
        pub = subprocess.run(me + ["--role", "pub"] + common,
                             env=setup_env(pub_setup, domain, profile, extra),
                             capture_output=True,
                             text=True, timeout=args.discovery_timeout + args.frames / args.rate
                             + args.linger + 60)
        time.sleep(0.5)
        out, err = sub.communicate(input="", timeout=60)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    p, s = _json_line(pub.stdout), _json_line(out)
    if not p or not s:
        raise RuntimeError(f"a measuring process failed:\npub: {pub.stderr[-2000:]}\n"
                           f"sub: {err[-2000:]}")
    return {"size": size, "reliability": reliability, "pub": pub_setup, "sub": sub_setup,
            "matched": p["matched"], "sub_saw_publisher": s["saw_publisher"],
            "sent": p["sent"], "received": s["received"]}


def cell_text(r: dict) -> str:
    if not r["matched"]:
        return "no discovery"
    return f"{r['received']}/{r['sent']}"


def markdown(results, args) -> str:
    if not results:
        return ""
    sizes = list(dict.fromkeys(r["size"] for r in results))
    rels = list(dict.fromkeys(r["reliability"] for r in results))
    cols = [(s, rl) for s in sizes for rl in rels]
    head = "| publisher → subscriber | " + " | ".join(
        f"{s} {rl.replace('_', ' ')}" for s, rl in cols) + " |"
    lines = [head, "|---|" + "---|" * len(cols)]
    pairs = list(dict.fromkeys((r["pub"], r["sub"]) for r in results))
    for pub, sub in pairs:
        row = [f"`{pub}` → `{sub}`"]
        for s, rl in cols:
            cell = [r for r in results if (r["pub"], r["sub"], r["size"], r["reliability"])
                    == (pub, sub, s, rl)]
            row.append(cell_text(cell[0]) if cell else "")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if args.env:
        lines.append("Both processes with " + ", ".join(f"`{e}`" for e in args.env) + ".")
    lines.append(f"rgb8 frames delivered / sent at {args.rate:g} Hz, keep last 5, "
                 f"{args.frames} frames per cell; {platform.node() and 'this host'}: "
                 f"{os.cpu_count()} CPUs, {platform.platform()}, "
                 f"{time.strftime('%Y-%m-%d')}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=("driver", "pub", "sub", "server", "call"),
                    default="driver",
                    help=argparse.SUPPRESS)
    ap.add_argument("--size", default="640x480", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="640x480,1280x720", help="WxH list, comma separated")
    ap.add_argument("--reliability", default="best_effort,reliable",
                    help="best_effort and/or reliable, comma separated")
    ap.add_argument("--pairs", default=",".join(DEFAULT_PAIRS),
                    help=f"publisher:subscriber set-ups, from {SETUPS}")
    ap.add_argument("--frames", type=int, default=60, help="frames per cell")
    ap.add_argument("--rate", type=float, default=30.0, help="publish rate (Hz)")
    ap.add_argument("--discovery-timeout", type=float, default=10.0)
    ap.add_argument("--linger", type=float, default=1.0,
                    help="seconds the publisher stays after its last frame")
    ap.add_argument("--profile", type=Path, default=PROFILE, help="the XML profile to test")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment variable for both processes (repeatable)")
    ap.add_argument("--service-calls", type=int, default=0,
                    help="also make N service calls per --pairs entry (server:client), each "
                         "from a fresh process; 0 = no service measurement")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    ap.add_argument("--markdown", type=Path, help="write the table here")
    args = ap.parse_args(argv)
    if args.role == "sub":
        return run_subscriber(args)
    if args.role == "pub":
        return run_publisher(args)
    if args.role == "server":
        return run_server(args)
    if args.role == "call":
        return run_caller(args)
    if not args.profile.is_file():
        ap.error(f"profile {args.profile} does not exist")
    results = []
    for size in [s for s in args.sizes.split(",") if s]:    # --sizes '': services only
        for rel in args.reliability.split(","):
            for pair in args.pairs.split(","):
                pub_setup, sub_setup = pair.split(":")
                r = measure_cell(args, size, rel, pub_setup, sub_setup, args.profile.resolve())
                results.append(r)
                print(f"{size:>9} {rel:<11} {pub_setup:>10} -> {sub_setup:<10} "
                      f"{cell_text(r)}", flush=True)
    table = markdown(results, args)
    services = []
    if args.service_calls > 0:
        for pair in args.pairs.split(","):
            server_setup, client_setup = pair.split(":")
            s = measure_services(args, server_setup, client_setup, args.profile.resolve())
            services.append(s)
            print(f"service {server_setup:>10} -> {client_setup:<10} "
                  f"{s['answered']}/{s['calls']} answered", flush=True)
        table += "\n\n| server ← client | service calls answered |\n|---|---|\n" + "\n".join(
            f"| `{s['server']}` ← `{s['client']}` | {s['answered']}/{s['calls']} |"
            for s in services)
    print()
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"delivery": results, "services": services},
                                        indent=2))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
