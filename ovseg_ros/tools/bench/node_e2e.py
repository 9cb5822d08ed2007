"""``ovseg-bench --node``: frames through the real node, over DDS, as a camera sends them.

    ovseg-bench --node --node-config config/cpu_realtime.yaml --random-init \\
                --precisions fp32,auto --sizes 640x480 --threads 2 --rate 15 --out out/node

For each preset (a ``--preset`` of ``ovseg_ros/presets.py`` or a params file given with
``--node-config``) and precision, the node runs in its own process
(``python -m ovseg_ros.node --ros-args --params-file ...``, the launch file's Fast DDS
profile ``config/fastdds_camera.xml``), and this process is the camera: a thread
publishes one ``sensor_msgs/Image`` at ``--rate`` Hz with the sensor-data QoS (best
effort, keep last 5), each stamped with the wall clock at sending. Measured per set of
subscribed outputs (the node builds only what has a subscriber):

    FPS        labels (``semantic``) received per second of the timed window
    latency    image stamp -> label received here (p50, p95): DDS in, the node's queue,
               decode, model, outputs, publish, DDS out
    drops      frames sent in the window that never got a label (the node keeps only the
               newest waiting frame: a slower model drops, it does not queue)
    node       the node's own /diagnostics figures: receipt -> published, and inference

The subscribers take the raw serialised bytes (the stamp is read from the CDR header), so
this process's Python work stays small next to the node's. The model-only table of the
same presets (``Segmenter.predict`` in this process, with bf16 vs fp32 label agreement
on the bundled photos) sits beside it in the same report, with the machine line:
CPU, flags kind, threads, precision per stage, load average, matmul ceilings.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

#: the subscription sets: a downstream consumer (labels and segments), and every 2D
#: output (a viewer plus a recorder; ``confidence`` only where publish_confidence is on)
SUBSCRIPTIONS = {"labels+segments": ("semantic", "segments"),
                 "all 2D": ("semantic", "panoptic", "confidence", "colored", "segments")}
ROOT = Path(__file__).resolve().parents[2]


def flags_kind(flags: Sequence[str]) -> str:
    """What the CPU's matrix arithmetic can do natively: decides what precision auto picks."""
    f = set(flags)
    if f & {"avx512_bf16", "amx_bf16"}:
        return "native bf16"
    if f & {"avx512_vnni", "avx_vnni"}:
        return "VNNI-only"
    if "avx2" in f:
        return "AVX2-only"
    return "no AVX2"


def preset_config(name: str, node_config: Optional[str]) -> Dict[str, Any]:
    """The flat settings of a named preset or of a ROS params file."""
    from ...config import _flatten, read_config_file
    from ...presets import PRESETS

    if node_config:
        return _flatten(read_config_file(node_config))
    return dict(PRESETS[name])


def case_config(base: Dict[str, Any], precision: str, args, size: str) -> Dict[str, Any]:
    cfg = dict(base)
    cache = Path(args.cache_dir).expanduser()
    # the node warms up (and with torch_compile compiles) at the size the camera sends
    cfg.update({"precision": precision, "num_threads": args.threads, "device": "cpu",
                "backend": "torch", "text_cache_dir": str(cache / "text"), "autostart": True,
                "warmup_size": size})
    cfg.setdefault("vocabulary", ["person", "chair", "table", "floor", "wall", "door"])
    from .common import apply_cli_overrides

    return apply_cli_overrides(cfg, args)


def stamp_of(raw: bytes) -> int:
    """Nanoseconds of the std_msgs/Header stamp that opens a serialised message (CDR:
    4-byte encapsulation, then int32 sec, uint32 nanosec)."""
    little = raw[1] == 1                        # 0x0001 = CDR little endian
    sec, nsec = struct.unpack("<iI" if little else ">iI", raw[4:12])
    return sec * 1_000_000_000 + nsec


class NodeProcess:
    """``python -m ovseg_ros.node`` with a params file, output to a log file."""

    def __init__(self, cfg: Dict[str, Any], workdir: Path, namespace: str, threads: int):
        import yaml

        from ...weights.bundles import _nest

        workdir.mkdir(parents=True, exist_ok=True)
        params = workdir / "params.yaml"
        params.write_text(yaml.safe_dump({"/**": {"ros__parameters": _nest(cfg)}}))
        self.log_path = workdir / "node.log"
        self._log = open(self.log_path, "w")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        if threads > 0:
            env["OMP_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ovseg_ros.node", "--ros-args", "--params-file", str(params),
             "-r", f"__ns:={namespace}"], cwd=str(ROOT), env=env, stdout=self._log,
            stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        import signal

        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Camera:
    """This process's side: the image publisher thread, raw output subscribers, and the
    node's diagnostics."""

    def __init__(self, namespace: str, rgb: np.ndarray, encoding: str):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from ...ros.image_conv import rgb_to_image

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("ovseg_bench_camera", namespace=namespace,
                                      context=self.ctx)
        self.pub = self.node.create_publisher(Image, "image", qos_profile_sensor_data)
        self.msg = rgb_to_image(rgb, encoding)      # built once: only the stamp changes
        self.msg.header.frame_id = "camera"
        self.lock = threading.Lock()
        self.sent: List[int] = []                   # stamps (ns) sent
        self.answers: Dict[str, List] = {}          # key -> [(receive ns, stamp ns)]
        self.subs: List = []
        self.diag: Dict[str, str] = {}
        self.node_diag: Dict[str, str] = {}         # the node's own status (warm-up, state)
        self.active_at: Optional[float] = None      # monotonic time of the first "active"
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._run = True
        self._spin = threading.Thread(target=self._spin_loop, daemon=True)
        self._spin.start()
        self._stop_pub = threading.Event()
        self._pub_thread: Optional[threading.Thread] = None

    def _spin_loop(self) -> None:
        while self._run:
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if self._run:
                    raise

    def _on_diag(self, arr) -> None:
        for st in arr.status:
            values = {kv.key: kv.value for kv in st.values}
            if "camera" in values and "inference_ms" in values:    # the camera's status
                with self.lock:
                    self.diag = values
            elif "state" in values:                                  # the node's status
                with self.lock:
                    self.node_diag = values
                    if values["state"] == "active" and self.active_at is None:
                        self.active_at = time.monotonic()

    def subscribe(self, keys: Sequence[str]) -> None:
        """Replace the output subscriptions (raw bytes; the stamp read from the header)."""
        from ...core.outputs import BY_KEY
        from ...node.camera import message_class
        from ...ros.qos import output_qos

        for s in self.subs:
            self.node.destroy_subscription(s)
        self.subs = []
        with self.lock:
            self.answers = {k: [] for k in keys}
        for key in keys:
            def cb(raw, key=key):
                t = time.time_ns()
                with self.lock:
                    self.answers[key].append((t, stamp_of(raw)))
            self.subs.append(self.node.create_subscription(
                message_class(BY_KEY[key].msg_type), BY_KEY[key].topic, cb, output_qos(),
                raw=True))

    def start(self, rate: float) -> None:
        self._stop_pub.clear()
        self._pub_thread = threading.Thread(target=self._publish_loop, args=(rate,),
                                            daemon=True)
        self._pub_thread.start()

    def _publish_loop(self, rate: float) -> None:
        t0, n = time.monotonic(), 0
        while not self._stop_pub.is_set():
            now = time.time_ns()
            self.msg.header.stamp.sec, self.msg.header.stamp.nanosec = divmod(now,
                                                                              1_000_000_000)
            self.pub.publish(self.msg)
            with self.lock:
                self.sent.append(now)
            n += 1
            self._stop_pub.wait(max(0.0, t0 + n / rate - time.monotonic()))

    def stop(self) -> None:
        self._stop_pub.set()
        if self._pub_thread is not None:
            self._pub_thread.join(5)

    def close(self) -> None:
        import rclpy

        self.stop()
        self._run = False
        self._spin.join(2)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)

    def labels(self) -> List:
        with self.lock:
            return list(self.answers.get("semantic", []))


def _wait(pred, timeout: float, node: NodeProcess, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        if not node.alive():
            raise RuntimeError(f"the node exited while waiting for {what}:\n{node.tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"no {what} within {timeout:.0f} s; node log:\n{node.tail()}")


def measure_window(cam: Camera, node: NodeProcess, keys: Sequence[str], args) -> Dict[str, Any]:
    """Subscribe to ``keys``, send frames until ``--node-warmup`` labels came back, then time
    ``--seconds`` of frames and wait for the last answers."""
    cam.subscribe(keys)
    cam.start(args.rate)
    try:
        _wait(lambda: len(cam.labels()) >= args.node_warmup, args.start_timeout, node,
              f"{args.node_warmup} labels for {','.join(keys)}")
        t0 = time.time_ns()
        time.sleep(args.seconds)
        t1 = time.time_ns()
        with cam.lock:          # the node's figures of the window's last seconds
            diag = dict(cam.diag)
    finally:
        cam.stop()
    # the frames of the window still in flight: wait for them (the latency bounds it)
    lat_guess = max([r - s for r, s in cam.labels()] or [0]) / 1e9
    time.sleep(min(10.0, 1.0 + 2 * lat_guess))
    with cam.lock:
        sent = [s for s in cam.sent if t0 <= s < t1]
        answers = {k: list(v) for k, v in cam.answers.items()}
    in_window = [(r, s) for r, s in answers["semantic"] if t0 <= r < t1]
    sent_set = set(sent)
    answered = {s for _, s in answers["semantic"] if s in sent_set}
    lat = sorted((r - s) / 1e6 for r, s in answers["semantic"] if s in sent_set)
    per_key = {k: sum(1 for _, s in v if s in sent_set) for k, v in answers.items()}
    return {
        "subscribed": list(keys), "seconds": (t1 - t0) / 1e9, "rate_hz": args.rate,
        "sent": len(sent), "answered": len(answered), "dropped": len(sent) - len(answered),
        "drop_pct": 100.0 * (len(sent) - len(answered)) / max(1, len(sent)),
        "fps": len(in_window) / ((t1 - t0) / 1e9),
        "latency_ms_p50": float(np.percentile(lat, 50)) if lat else None,
        "latency_ms_p95": float(np.percentile(lat, 95)) if lat else None,
        "answers_per_output": per_key,
        "node_latency_ms": _num(diag.get("latency_ms")),
        "node_inference_ms": _num(diag.get("inference_ms")),
        # the node's own stages (runtime/stats.py STAGES): where the rest of its latency goes
        "node_stages_ms": {k[len("stage_"):-len("_ms")]: _num(v) for k, v in diag.items()
                           if k.startswith("stage_")},
        "node_outputs_published": diag.get("outputs_published"),
        "node_precision": diag.get("precision"),
    }


def _num(v) -> Optional[float]:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def run_node_case(bench, name: str, cfg: Dict[str, Any], size: str, args,
                  out: Path) -> Dict[str, Any]:
    """One node process (one preset, precision and input size), every subscription set."""
    w, h = bench.parse_size(size)
    ns = f"/ovseg_bench_{os.getpid()}_{random.randint(0, 99999)}"
    spawned = time.monotonic()
    node = NodeProcess(cfg, out / "logs" / f"{name}_{cfg['precision']}_{size}", ns,
                       args.threads)
    cam = None
    rec: Dict[str, Any] = {"preset": name, "precision": cfg["precision"], "size": size,
                           "random_weights": bool(cfg.get("random_init")), "windows": []}
    try:
        cam = Camera(ns, bench.synthetic_frame(w, h), args.encoding)
        for label, keys in SUBSCRIPTIONS.items():
            if label not in args.node_subscriptions:
                continue
            row = measure_window(cam, node, keys, args)
            if "start_s" not in rec:
                rec.update(start_facts(cam, spawned))
                print(f"[node | {name} | {cfg['precision']} | {size}] start "
                      f"{_f(rec['start_s'], '.1f')} s, of which warm-up "
                      f"{_f(rec['warmup_s'], '.1f')} s (torch_compile "
                      f"{rec['warmup_compiled']})", flush=True)
            row["subscription_set"] = label
            row["loadavg"] = os.getloadavg()[0]
            rec["windows"].append(row)
            print(f"[node | {name} | {cfg['precision']} | {size} | {label}] "
                  f"{row['fps']:.2f} FPS, p50 {_f(row['latency_ms_p50'])} ms, "
                  f"p95 {_f(row['latency_ms_p95'])} ms, {row['answered']}/{row['sent']} "
                  f"answered; node: receipt->published {_f(row['node_latency_ms'])} ms, "
                  f"stages {_stages(row)}; load {row['loadavg']:.2f}",
                  flush=True)
    except Exception as exc:   # a case that cannot run is reported; the others still run
        rec["error"] = f"{type(exc).__name__}: {exc}"
        print(f"[node | {name} | {cfg['precision']} | {size}] not run: "
              f"{str(exc).splitlines()[0][:300]}", flush=True)
    finally:
        if cam is not None:
            cam.close()
        node.stop()
    return rec


def start_facts(cam: Camera, spawned: float) -> Dict[str, Any]:
    """How long the node took to start: process spawn to its first "active" diagnostics
    (to within diagnostics_period), and configure's warm-up from its diagnostics (with
    torch_compile: the compile, or the Inductor cache's answer)."""
    with cam.lock:
        diag, active_at = dict(cam.node_diag), cam.active_at
    return {"start_s": None if active_at is None else active_at - spawned,
            "warmup_s": _num(diag.get("warmup_s")),
            "warmup_size": diag.get("warmup_size"),
            "warmup_compiled": diag.get("warmup_compiled") == "True"}


def _stages(w: Dict[str, Any]) -> str:
    st = w.get("node_stages_ms", {})
    return (f"{_f(st.get('wait'), '.1f')}, {_f(st.get('decode'), '.1f')}, "
            f"**{_f(w['node_inference_ms'])}**, {_f(st.get('outputs'), '.1f')}, "
            f"{_f(st.get('publish'), '.1f')}")


def _f(v, spec=".0f") -> str:
    return "–" if v is None else format(v, spec)


def model_only(bench, name: str, cfg: Dict[str, Any], size: str, args) -> Dict[str, Any]:
    """The same settings through ``Segmenter.predict`` in this process (bench.run_case),
    with the label agreement on the bundled photos (fp32 first: the reference)."""
    w, h = bench.parse_size(size)
    ns = argparse.Namespace(device="cpu", warmup=args.warmup or 1, iters=args.iters or 5,
                            max_case_seconds=args.max_case_seconds, photos=args.photos,
                            flops=False)
    model_cfg = {k: v for k, v in cfg.items() if k != "autostart"}
    case = bench.Case(name, "torch", cfg["precision"], size, model_cfg)
    # in a worker thread, as the node's worker runs its model: on the shared 2 cores the
    # same predict in the main thread measured 5-10x slower (docs/benchmarks/cpu.md)
    with ThreadPoolExecutor(1) as pool:
        rec = pool.submit(bench.run_case, case, bench.synthetic_frame(w, h), ns, None).result()
    rec.pop("semantic", None)
    rec.pop("describe", None)
    rec["loadavg"] = os.getloadavg()[0]
    if "error" not in rec:
        print(f"[model | {name} | {cfg['precision']} | {size}] {rec['fps']:.2f} FPS, p50 "
              f"{rec['latency_ms_p50']:.0f} ms, photos = fp32 "
              f"{_f(rec.get('labels_equal_fp32_photos_pct'), '.2f')}%", flush=True)
    return rec


def isolate_dds() -> str:
    """The launch file's Fast DDS profile, and a domain of its own (other DDS work on
    this machine must not answer or load the camera's topics)."""
    from .node import apply_dds_profile

    note = apply_dds_profile()
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
    os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
    return note


def _bench_helpers():
    """The bench package's helpers this mode reuses (machine facts, matmul ceiling, frames,
    the model-only case), as one namespace."""
    from types import SimpleNamespace

    from .common import _jsonable, parse_size, synthetic_frame
    from .machine import cpu_flags, cpu_model, machine_info, matmul_ceiling
    from .table import Case, run_case

    return SimpleNamespace(
        Case=Case, run_case=run_case, _jsonable=_jsonable, parse_size=parse_size,
        synthetic_frame=synthetic_frame, cpu_flags=cpu_flags, cpu_model=cpu_model,
        machine_info=machine_info, matmul_ceiling=matmul_ceiling)


def run(args, argv) -> int:
    """The ``--node`` axis of ovseg-bench: node cases, then the model-only ones."""
    import torch

    bench = _bench_helpers()

    names = [(Path(c).stem, c) for c in args.node_config or []]
    names += [(p, None) for p in args.preset or ([] if names else ["proxyclip-tiny"])]
    precisions = args.precisions.split(",") if args.precisions else ["fp32", "auto"]
    for pr in precisions:
        if pr not in ("fp32", "bf16", "int8", "auto"):
            raise SystemExit(f"--precisions: {pr!r} is not one of fp32, bf16, int8, auto (CPU)")
    sizes = args.sizes.split(",") if args.sizes else ["640x480"]
    for sz in sizes:
        bench.parse_size(sz)
    args.node_subscriptions = [s.strip() for s in args.node_subscriptions.split(",")]
    unknown = set(args.node_subscriptions) - set(SUBSCRIPTIONS)
    if unknown:
        raise SystemExit(f"--node-subscriptions: unknown {sorted(unknown)}; choose from "
                         f"{', '.join(SUBSCRIPTIONS)}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    dds = isolate_dds()
    machine = bench.machine_info("cpu")
    flags = bench.cpu_flags()
    machine["cpu_flags_kind"] = flags_kind(flags)
    ceilings = {p: bench.matmul_ceiling(p, "cpu") for p in ("fp32", "bf16")}
    load0 = os.getloadavg()[0]
    print(f"machine: {bench.cpu_model()} ({machine['cpu_flags_kind']}: {', '.join(flags)}), "
          f"{threads} thread(s), load average {load0:.2f}; matmul ceiling "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in ceilings.items()) + f"; {dds}",
          flush=True)
    out = Path(args.out)
    node_rows, model_rows = [], []
    for name, path in names:
        base = preset_config(name, path)
        for size in sizes:
            for pr in precisions:
                node_rows.append(run_node_case(bench, name, case_config(base, pr, args, size),
                                               size, args, out))
            if not args.node_only:
                for pr in sorted(precisions, key=lambda p: p != "fp32"):   # reference first
                    model_rows.append(model_only(bench, name,
                                                 case_config(base, pr, args, size), size, args))
    load1 = os.getloadavg()[0]
    report = {"created_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": machine, "threads": threads, "ceilings_gflops": ceilings,
              "loadavg": [load0, load1], "dds": dds,
              "rmw": os.environ.get("RMW_IMPLEMENTATION", "default"),
              "encoding": args.encoding,
              "command": " ".join(["ovseg-bench"] + list(argv if argv is not None
                                                         else sys.argv[1:])),
              "node": node_rows, "model": model_rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "node_e2e.json").write_text(json.dumps(bench._jsonable(report), indent=2))
    md = markdown(report)
    (out / "node_e2e.md").write_text(md)
    print(md)
    print(f"wrote {out / 'node_e2e.json'} and {out / 'node_e2e.md'}")
    ok = [r for r in node_rows if "error" not in r]
    return 0 if ok and len(ok) == len(node_rows) else 1


def markdown(report: Dict[str, Any]) -> str:
    m = report["machine"]
    c = report["ceilings_gflops"]
    lines = [
        f"## Through the node ({report['created_utc']})", "",
        f"Machine: {m['cpu']} ({m['cpu_flags_kind']}; flags {', '.join(m['cpu_flags'])}), "
        f"{m['cpus_usable']} CPUs usable, {report['threads']} thread(s) (node and model); "
        f"load average {report['loadavg'][0]:.2f} at the start, {report['loadavg'][1]:.2f} at "
        f"the end; matmul ceiling (2048², same run) fp32 {c['fp32']:.0f} GFLOP/s, bf16 "
        f"{c['bf16']:.0f} GFLOP/s; RMW {report['rmw']}, {report['dds']}; frames "
        f"{report['encoding']} over DDS with the sensor-data QoS.", "",
        f"`{report['command']}`", "",
        "| preset | precision | input | weights | subscribed | rate Hz | FPS | p50 ms | p95 ms "
        "| answered / sent | node: receipt→published ms | node stages ms: wait, decode, "
        "**inference**, outputs, publish | load |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in report["node"]:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['precision']} | {r['size']} | not run: "
                         f"{r['error'].splitlines()[0][:200]} |" + " |" * 9)
        for w in r["windows"]:
            lines.append(
                f"| {r['preset']} | {r['precision']} | {r['size']} | "
                f"{'random' if r['random_weights'] else 'pretrained'} | "
                f"{w['subscription_set']} ({', '.join(w['subscribed'])}) | {w['rate_hz']:g} | "
                f"{w['fps']:.2f} | {_f(w['latency_ms_p50'])} | {_f(w['latency_ms_p95'])} | "
                f"{w['answered']} / {w['sent']} | {_f(w['node_latency_ms'])} | "
                f"{_stages(w)} | {w['loadavg']:.2f} |")
    lines += [""] + [
        f"- Start of {r['preset']} {r['precision']} {r['size']}: process spawn → active "
        f"{_f(r.get('start_s'), '.1f')} s (to within the diagnostics period), of which "
        f"configure's warm-up at {r.get('warmup_size') or '–'} {_f(r.get('warmup_s'), '.1f')} s"
        + (" (torch_compile: compile or Inductor cache)" if r.get("warmup_compiled") else "")
        for r in report["node"] if "error" not in r]
    lines += ["", "Latency: image stamp (wall clock at sending) to the label image "
              "received in the camera process. Answered: frames of the timed window that got "
              "a label; the node keeps the newest waiting frame only, so a model slower than "
              "the rate drops frames instead of queueing them. Node figures: the camera's "
              "/diagnostics at the end of the window (means over its last 5 s): receipt → "
              "published, and its stages: wait (receipt to the worker taking the frame), "
              "decode (message to RGB), inference (the model), outputs (products and "
              "messages), publish (the publish calls).", ""]
    if report["model"]:
        lines += ["### Model only (`Segmenter.predict` in a worker thread, as the node runs "
                  "it; same settings, same run)", "",
                  "| preset | precision | input | FPS | p50 ms | p95 ms | stages ms (mean) | "
                  "precision per stage | labels = fp32 on photos (mean, worst) | load |",
                  "|---|---|---|---:|---:|---:|---|---|---:|---:|"]
        for r in report["model"]:
            if "error" in r:
                lines.append(f"| {r['preset']} | {r['precision']} | {r['size']} | not run: "
                             f"{r['error'].splitlines()[0][:200]} |" + " |" * 6)
                continue
            stages = ", ".join(f"{k} {v:.0f}" for k, v in r["stages_ms"].items()
                               if k != "total")
            prec = ", ".join(f"{k} {v}" for k, v in r.get("stage_precision", {}).items())
            agree = ("reference" if r["precision"] == "fp32" else
                     f"{_f(r.get('labels_equal_fp32_photos_pct'), '.2f')}% / "
                     f"{_f(r.get('labels_equal_fp32_photos_min_pct'), '.2f')}%")
            lines.append(f"| {r['preset']} | {r['precision']} | {r['size']} | {r['fps']:.2f} | "
                         f"{r['latency_ms_p50']:.0f} | {r['latency_ms_p95']:.0f} | {stages} | "
                         f"{prec or '–'} | {agree} | {r['loadavg']:.2f} |")
    return "\n".join(lines) + "\n"
