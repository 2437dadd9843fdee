"""When a kernel call runs on one thread: below ``SERIAL_MAX_MACS`` multiply-adds.

Handing a parallel loop to Numba's thread pool costs a wake-up of every worker and a join; on a
2-core machine that is busy with anything else each call also waits for a time slice. A
decode-step GEMV of the Shakespeare model (256 × 768 weights, one token) is ~0.2 M
multiply-adds, well under a millisecond on one core, so the hand-off can cost more than the
work (measured: the model's W4A16 step 0.5 ms on one thread, 90 ms with two on a loaded
machine). Calls below the threshold run with one thread; bigger ones use every thread. At the
TinyLlama-1.1B shape a 2048 × 2048 W4A16 GEMV (4.2 M) ran 0.27 ms on one thread inside the
model's decode step and 0.13 ms on two, hence 1 M: the 256 × 2048 key/value projections stay
serial, the rest run parallel. The
results are bit-identical either way: each output block is computed by one thread in the same
order whatever the thread count.
"""

from __future__ import annotations

from contextlib import contextmanager

import numba

__all__ = ["SERIAL_MAX_MACS", "threads_for"]

SERIAL_MAX_MACS = 1 << 20  # 1 M multiply-adds ≈ a 512 × 2048 GEMV: serial below, parallel above


@contextmanager
def threads_for(macs: int):
    """Run the body with one Numba thread if ``macs`` ≤ SERIAL_MAX_MACS, else as configured.

    >>> with threads_for(10):
    ...     numba.get_num_threads()
    1
    """
    if macs > SERIAL_MAX_MACS:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)
