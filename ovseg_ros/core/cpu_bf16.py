"""bf16 on a CPU: native, emulated (warned, with the measured slowdown) or refused.

x86 CPUs with AVX512-BF16 or AMX-BF16 run bf16 matmuls several times faster than
fp32 (2-thread 2048² matmul on an AMD EPYC: ≈740 vs ≈150 GFLOP/s). Without them
oneDNN emulates bf16: with AVX-512 it converts on the fly (a few times slower than
fp32); with AVX2 only, bf16 matmuls fall back to scalar code, ~400x slower than fp32,
so a real-size frame would take minutes. ``precision: auto`` never picks bf16 there
(``ovseg_ros/config.py``); an explicit ``precision: bf16`` is checked here:

- native: nothing to say;
- emulated with AVX-512: a warning naming the measured slowdown (the ratio of the
  fp32 and bf16 matmul rates, measured once per process and thread count);
- no AVX-512 (AVX2-only, or flags unreadable on x86): refused (``ConfigError``);
- other architectures (aarch64): not judged by these x86 flags.

The CPU flags are an argument (``flags=None`` reads ``/proc/cpuinfo``), so a test can
present another CPU; the arithmetic is always this machine's.
"""
from __future__ import annotations

import logging
import platform
import time
from typing import Dict, Iterable, Optional

from ..config import cpu_kind, read_cpu_flags
from ..schema import ConfigError

log = logging.getLogger(__name__)

NATIVE_FLAGS = ("avx512_bf16", "amx_bf16")
#: a matmul of this size is timed: large enough for the fp32 kernels to reach speed,
#: small enough that the ~400x slower scalar bf16 path still finishes in well under 1 s
PROBE_N = 256
PROBE_SECONDS = 0.1
#: ``config.cpu_kind`` -> how bf16 runs there
_BF16_KINDS = {"amx": "native", "avx512_bf16": "native", "vnni": "emulated",
               "avx512": "emulated", "avx2": "scalar", "unknown": "unknown"}

_slowdown_cache: Dict[int, float] = {}


def bf16_kind(flags: Optional[Iterable[str]]) -> str:
    """``native``, ``emulated`` (AVX-512 without its bf16 extension), ``scalar`` (x86
    without AVX-512) or ``unknown`` (no flags: not x86 Linux); from ``config.cpu_kind``."""
    return _BF16_KINDS[cpu_kind(flags, read=False)]


def _rate(dtype, n: int, seconds: float) -> float:
    """Matmuls per second of an n x n product in ``dtype`` (at least 2 timed calls)."""
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    calls, start = 0, time.perf_counter()
    while True:
        torch.mm(a, b)
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= 2 and elapsed >= seconds:
            return calls / elapsed


def bf16_matmul_slowdown() -> float:
    """How many times longer a bf16 matmul takes than the same fp32 one on this CPU
    (measured once per process and torch thread count; < 1 where bf16 is faster)."""
    import torch

    threads = torch.get_num_threads()
    if threads not in _slowdown_cache:
        fp32 = _rate(torch.float32, PROBE_N, PROBE_SECONDS)
        bf16 = _rate(torch.bfloat16, PROBE_N, PROBE_SECONDS)
        _slowdown_cache[threads] = fp32 / bf16
    return _slowdown_cache[threads]


def check_cpu_bf16(flags: Optional[Iterable[str]] = None, machine: Optional[str] = None) -> str:
    """Check an explicit ``precision: bf16`` on the CPU; returns ``bf16_kind``.

    Warns (emulated) or raises ConfigError (no AVX-512) as the module docstring says.
    ``flags`` None reads /proc/cpuinfo; ``machine`` None is ``platform.machine()``.
    """
    machine = (machine or platform.machine()).lower()
    if flags is None:
        flags = read_cpu_flags()
    kind = bf16_kind(flags)
    if kind == "native" or machine not in ("x86_64", "amd64"):
        # non-x86 (aarch64 with or without BF16): the x86 flag rule does not apply
        return kind
    slowdown = bf16_matmul_slowdown()
    measured = (f"measured here: a {PROBE_N}² bf16 matmul takes {slowdown:.1f}x the time "
                f"of fp32")
    if kind == "emulated":
        log.warning("precision bf16 on a CPU without native bf16 (no %s in /proc/cpuinfo): "
                    "bf16 matmuls are emulated, %s; use precision: fp32 (or auto)",
                    "/".join(NATIVE_FLAGS), measured)
        return kind
    raise ConfigError(
        "config key 'precision': bf16 refused on this CPU: it has neither "
        f"{'/'.join(NATIVE_FLAGS)} nor AVX-512 (flags {'unreadable' if flags is None else 'read'}"
        f" from /proc/cpuinfo), so bf16 matmuls run in scalar code ({measured}; AVX2-only "
        "CPUs are ~400x slower than fp32, minutes per frame). Use precision: fp32 or auto")


__all__ = ["NATIVE_FLAGS", "read_cpu_flags", "bf16_kind", "bf16_matmul_slowdown",
           "check_cpu_bf16"]
