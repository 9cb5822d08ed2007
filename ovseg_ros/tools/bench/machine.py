"""Machine facts every figure names: the CPU, its flags, threads, memory, software versions, and
the fp32/bf16 matrix-multiplication ceiling measured in the same run.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

#: reference ceilings measured on an AMD EPYC (2 threads, 2048^2 matmul)
REFERENCE_CEILING_GFLOPS = {"fp32": 150.0, "bf16": 740.0}



def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> List[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile",
                                       "avx512_fp16", "avx512_vnni", "avx_vnni"})
    except OSError:
        pass
    return []


def machine_info(device: str) -> Dict[str, Any]:
    import torch

    info: Dict[str, Any] = {
        "cpu": cpu_model(), "cpu_flags": cpu_flags(), "logical_cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "memory_gib": _mem_total_gib(), "python": platform.python_version(),
        "torch": torch.__version__, "gpu": None}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def _mem_total_gib() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return None


def matmul_ceiling(dtype_name: str, device: str, n: int = 2048, seconds: float = 1.0) -> float:
    """Achieved GFLOP/s of an n x n matmul in this dtype (the arithmetic ceiling of the case);
    ``int8``: int8 x int8 -> int32 (``torch._int_mm``, VNNI/AMX where the CPU has them), in
    GOP/s, the ceiling of ``precision: int8``'s quantised linears."""
    import torch

    dev = torch.device(device)
    if dtype_name == "int8":
        a = torch.randint(-127, 128, (n, n), dtype=torch.int8, device=dev)
        b = torch.randint(-127, 128, (n, n), dtype=torch.int8, device=dev)
        mm = torch._int_mm
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
        a = torch.randn(n, n, device=dev).to(dtype)
        b = torch.randn(n, n, device=dev).to(dtype)
        mm = torch.mm
    for _ in range(2):
        mm(a, b)
    _sync(dev)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or reps < 3:
        mm(a, b)
        reps += 1
        _sync(dev)
    dt = time.perf_counter() - t0
    return 2 * n ** 3 * reps / dt / 1e9


def cpu_machine_line(threads: int, extra: str = "", *, int8: bool = False
                     ) -> Tuple[str, Dict[str, float]]:
    """(one line, ceilings): what every CPU figure of a measurement script depends on: the
    CPU and its flags, threads, load average and the fp32/bf16 matmul ceilings (GFLOP/s)
    measured now; with ``int8`` also the int8 one (GOP/s), for figures of int8 paths."""
    m = machine_info("cpu")
    ceil = {k: matmul_ceiling(k, "cpu") for k in ("fp32", "bf16") + (("int8",) if int8 else ())}
    line = (f"machine: {m.get('cpu')} flags {','.join(m.get('cpu_flags') or [])}; "
            f"{threads} thread(s); load average {os.getloadavg()[0]:.2f}; ceiling fp32 "
            f"{ceil['fp32']:.0f} bf16 {ceil['bf16']:.0f} GFLOP/s"
            + (f", int8 {ceil['int8']:.0f} GOP/s" if int8 else ""))
    return (f"{line}; {extra}" if extra else line), ceil


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)

