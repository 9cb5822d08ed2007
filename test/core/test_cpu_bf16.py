"""Explicit bf16 on a CPU without native bf16: warned with the measured slowdown, or
refused where matmuls would run in scalar code. The CPU flags are faked (a function
argument); the matmul timing is this machine's own."""
import logging
import re

import pytest
import torch

from ovseg_ros.backends.base import check_precision
from ovseg_ros.config import ConfigError
from ovseg_ros.core import cpu_bf16
from ovseg_ros.core.cpu_bf16 import bf16_kind, bf16_matmul_slowdown, check_cpu_bf16

AVX512_NO_BF16 = {"fpu", "sse2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl"}
AVX2_ONLY = {"fpu", "sse2", "avx", "avx2", "fma"}


def test_kinds_from_flags():
    assert bf16_kind(AVX512_NO_BF16 | {"avx512_bf16"}) == "native"
    assert bf16_kind(AVX2_ONLY | {"amx_bf16"}) == "native"
    assert bf16_kind(AVX512_NO_BF16) == "emulated"
    assert bf16_kind(AVX2_ONLY) == "scalar"
    assert bf16_kind(None) == "unknown"


def test_native_cpu_passes_silently(caplog):
    with caplog.at_level(logging.WARNING, logger=cpu_bf16.__name__):
        assert check_cpu_bf16(AVX512_NO_BF16 | {"avx512_bf16"}, machine="x86_64") == "native"
    assert not caplog.records


def test_emulated_bf16_warns_with_the_measured_slowdown(caplog):
    with caplog.at_level(logging.WARNING, logger=cpu_bf16.__name__):
        assert check_cpu_bf16(AVX512_NO_BF16, machine="x86_64") == "emulated"
    (record,) = caplog.records
    text = record.getMessage()
    assert "emulated" in text and "avx512_bf16" in text and "precision: fp32" in text
    figure = float(re.search(r"takes ([0-9.]+)x the time", text).group(1))
    # the figure is the cached measurement of this machine, rounded to one decimal
    assert figure == pytest.approx(bf16_matmul_slowdown(), abs=0.051)
    assert bf16_matmul_slowdown() > 0


def test_avx2_only_cpu_is_refused_with_a_clear_message():
    with pytest.raises(ConfigError, match=r"(?s)'precision'.*bf16 refused.*AVX-512.*"
                                          r"takes [0-9.]+x the time.*precision: fp32"):
        check_cpu_bf16(AVX2_ONLY, machine="x86_64")
    # read from this machine (no fake): never refused here
    check_cpu_bf16()


def test_non_x86_is_not_judged_by_x86_flags():
    assert check_cpu_bf16(AVX2_ONLY, machine="aarch64") == "scalar"
    assert check_cpu_bf16(set(), machine="aarch64") == "scalar"


def test_slowdown_is_measured_once_per_thread_count(monkeypatch):
    calls = []
    real = cpu_bf16._rate
    monkeypatch.setattr(cpu_bf16, "_rate", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(cpu_bf16, "_slowdown_cache", {})
    first = bf16_matmul_slowdown()
    assert bf16_matmul_slowdown() == first and len(calls) == 2


def test_backend_precision_check_runs_the_cpu_check():
    """check_precision (what the torch backend and ProxyCLIP call) resolves bf16 on this
    machine's CPU through the check: fine here, the dtype comes back."""
    assert check_precision("bf16", torch.device("cpu")) is torch.bfloat16
    assert check_precision("fp32", torch.device("cpu")) is None
