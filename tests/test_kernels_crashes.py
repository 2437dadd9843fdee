"""Packed weights whose fields lie about their buffers are refused in Python, never a crash.

Each case runs in a child process: a segfault or an out-of-bounds write there fails the test
(the child dies by a signal or aborts) instead of killing pytest. The child must exit through
our ValueError, with a one-line message that names the offending object.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tinyquant.kernels import vnni

REPO = Path(__file__).resolve().parents[1]
KINDS = ["portable"] + (["vnni"] if vnni.has_vnni() else [])
REFUSED = 3  # the child's exit code after a ValueError

CHILD = """
import dataclasses, sys
import numpy as np
from tinyquant import kernels
from tinyquant.kernels import numba_int, weight_only
rng = np.random.default_rng(0)
try:
{body}
except ValueError as e:
    print(e)
    sys.exit({refused})
print("no error")
"""


def _refusal(body: str) -> str:
    """Run ``body`` in a fresh interpreter; require a clean ValueError; return its message."""
    code = CHILD.format(body=textwrap.indent(textwrap.dedent(body), "    "), refused=REFUSED)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert r.returncode >= 0, f"child killed by signal {-r.returncode}:\n{r.stderr[-3000:]}"
    assert r.returncode == REFUSED, (
        f"exit {r.returncode}, expected a ValueError:\n{r.stdout}{r.stderr[-3000:]}"
    )
    message = r.stdout.strip()
    assert message and "\n" not in message, f"not a one-line message: {message!r}"
    return message


W4_64x64 = """
pw = kernels.prepack(np.zeros((64, 32), np.uint8), np.ones((64, 1), np.float32),
                     np.zeros((64, 1), np.float32), 64, 4)
"""


def test_a_weight_whose_in_features_and_group_size_were_replaced_is_refused_not_a_segfault():
    message = _refusal(
        W4_64x64
        + """
bad = dataclasses.replace(pw, in_features=2**22, group_size=2**22)
kernels.packed_linear(np.ones((1, 2**22), np.float32), bad)
"""
    )
    assert "PackedWeightOnly.w" in message and "prepack" in message


def test_fields_overwritten_after_construction_are_caught_when_the_kernel_is_called():
    message = _refusal(
        W4_64x64
        + """
object.__setattr__(pw, "in_features", 2**22)  # bypasses the constructor's checks
object.__setattr__(pw, "group_size", 2**22)
kernels.packed_linear(np.ones((1, 2**22), np.float32), pw)
"""
    )
    assert message.startswith("pw.w has shape")


def test_a_buffer_reshaped_in_place_is_caught_when_the_kernel_is_called():
    message = _refusal(
        W4_64x64
        + """
pw.w.shape = (1, 32, 64)  # same bytes, a lie about the layout
kernels.packed_linear(np.ones((1, 64), np.float32), pw)
"""
    )
    assert message.startswith("pw.w has shape (1, 32, 64)")


def test_a_640x4096_weight_claiming_64_inputs_is_refused_before_the_dequantize_kernel():
    message = _refusal(
        """
pw = kernels.prepack(np.zeros((640, 2048), np.uint8), np.ones((640, 64), np.float32),
                     np.zeros((640, 64), np.float32), 64, 4)
bad = dataclasses.replace(pw, in_features=64)
kernels.packed_linear(np.ones((20, 64), np.float32), bad)  # T = 20: the dequantize + BLAS path
"""
    )
    assert "PackedWeightOnly.w has shape (10, 4096, 32)" in message


def test_dequantizing_a_weight_with_lying_fields_is_refused():
    message = _refusal(
        W4_64x64
        + """
object.__setattr__(pw, "out_features", 6400)
kernels.dequantize_packed(pw)
"""
    )
    assert message.startswith("pw.w has shape")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lie", ["out_features=200", "in_features=1000", "in_features=64"])
def test_an_int8_gemm_on_a_w8a8_weight_with_lying_sizes_is_refused(kind, lie):
    message = _refusal(
        f"""
w = rng.integers(-127, 128, (70, 130), dtype=np.int8)
p = kernels.prepack_w8a8(w, np.ones(70, np.float32), "{kind}")
object.__setattr__(p, "{lie.split("=")[0]}", {lie.split("=")[1]})
kernels.int8_matmul_packed(np.ones((3, p.in_features), np.int8), p)
"""
    )
    assert message.startswith("p.u has shape")


@pytest.mark.parametrize("kind", KINDS)
def test_a_w8a8_linear_on_a_weight_built_with_lying_sizes_is_refused(kind):
    message = _refusal(
        f"""
w = rng.integers(-127, 128, (70, 130), dtype=np.int8)
p = kernels.prepack_w8a8(w, np.ones(70, np.float32), "{kind}")
bad = dataclasses.replace(p, out_features=7, scale=np.ones(7, np.float32))
kernels.w8a8_packed_linear(rng.standard_normal((2, 130), dtype=np.float32), bad)
"""
    )
    assert message.startswith("PackedW8A8.u has shape")


def test_a_w8a8_weight_whose_layout_name_was_swapped_is_refused():
    message = _refusal(
        """
p = kernels.prepack_w8a8(np.ones((70, 130), np.int8), np.ones(70, np.float32), "portable")
kernels.int8_matmul_packed(np.ones((1, 130), np.int8), dataclasses.replace(p, kernels="vnni"))
"""
    )
    assert message.startswith("PackedW8A8.u must have 4 axes")


def test_the_child_harness_reports_a_crash_as_a_failure():
    # the oracle for the tests above: a child that dies by a signal must not pass
    with pytest.raises(AssertionError, match="killed by signal"):
        _refusal("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
