"""Accelerators as data: memory, bandwidth, dense FP16 FLOP/s — and "this CPU", measured.

    ridge = peak FLOP/s ÷ bandwidth  (FLOP per byte; H100 SXM 989e12 / 3.35e12 ≈ 295)

A kernel whose arithmetic intensity (FLOP per byte moved) is below the ridge is memory-bound.
Batch-1 decode does ≈ 2 FLOP per weight: ≈ 4 FLOP/byte at FP16, far below every ridge here.
Refs: Williams et al. 2009 "Roofline"; the datasheets cited per device.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["Device", "DEVICES", "get_device", "measure_cpu"]


@dataclass(frozen=True)
class Device:
    """An accelerator's memory, bandwidth and dense FP16 tensor throughput.

    >>> d = DEVICES["a100"]
    >>> round(d.flops / d.bandwidth)        # the ridge point, FLOP/byte
    153
    """

    name: str  # key in DEVICES
    memory: float  # bytes
    bandwidth: float  # bytes / s
    flops: float  # dense FP16 FLOP/s (tensor cores where present)
    source: str  # datasheet


DEVICES: dict[str, Device] = {
    d.name: d
    for d in [
        Device("h100", 80e9, 3.35e12, 989e12, "NVIDIA H100 SXM5 datasheet: 3.35 TB/s, "
               "989 TFLOPS dense FP16/BF16 (1979 with sparsity)"),
        Device("a100", 80e9, 2.039e12, 312e12, "NVIDIA A100 80GB SXM datasheet: 2.039 TB/s, "
               "312 TFLOPS dense FP16"),
        Device("rtx4090", 24e9, 1.008e12, 165.2e12, "NVIDIA Ada whitepaper: 1008 GB/s, "
               "165.2 TFLOPS FP16 tensor with FP32 accumulate, dense"),
        Device("m3-max", 128e9, 400e9, 16.4e12, "Apple M3 Max 40-core GPU: 400 GB/s, 128 GB; "
               "FLOPs are an estimate (40 cores × 128 ALUs × 2 × 1.6 GHz), Apple states none"),
    ]
}  # fmt: skip


def measure_cpu(n_bytes: int = 256 * 2**20) -> Device:
    """ "this CPU": memory from sysconf, bandwidth from a NumPy copy of ``n_bytes`` (read +
    write counted, best of 3), FLOP/s from a float32 1024³ matmul (best of 3). Shared machines
    give lower numbers; pass --bandwidth to use a datasheet value instead."""
    a = np.ones(n_bytes // 4, np.float32)
    b = np.empty_like(a)
    copy_s = min(_timed(lambda: np.copyto(b, a)) for _ in range(3))
    x = np.ones((1024, 1024), np.float32)
    mm_s = min(_timed(lambda: x @ x) for _ in range(3))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Device("cpu", float(mem), 2 * a.nbytes / copy_s, 2 * 1024**3 / mm_s,
                  "measured here: np.copyto bandwidth, float32 matmul FLOP/s")  # fmt: skip


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def get_device(name: str, bandwidth: float | None = None) -> Device:
    """A named device, or "cpu" (measured); ``bandwidth`` (bytes/s) overrides the datasheet."""
    if name == "cpu":
        d = measure_cpu()
    elif name in DEVICES:
        d = DEVICES[name]
    else:
        raise ValueError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}, cpu")
    if bandwidth is not None:
        if not bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0 bytes/s, got {bandwidth}")
        d = Device(d.name, d.memory, float(bandwidth), d.flops, d.source + " (bandwidth given)")
    return d
