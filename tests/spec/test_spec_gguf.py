"""llama.cpp block formats are byte-identical to the gguf package's reference quantizers."""

import gguf
import numpy as np
from gguf import quants
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from spec_strategies import tensors

from tinyquant.quant.gguf_blocks import dequantize_gguf, quantize_gguf

TYPES = {
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
    "q4_0": gguf.GGMLQuantizationType.Q4_0,
    "q4_1": gguf.GGMLQuantizationType.Q4_1,
}
KINDS = st.sampled_from(list(TYPES))


def scales_are_zero_or_normal(x, kind):
    """ggml computes 1/d: for a subnormal float32 d that overflows and C's cast is undefined."""
    b = x.reshape(-1, 32).astype(np.float32)
    if kind == "q8_0":
        d = np.abs(b).max(1) / np.float32(127)
    elif kind == "q4_0":
        d = np.abs(b).max(1) / np.float32(8)
    else:
        d = (b.max(1) - b.min(1)) / np.float32(15)
    return bool(np.all((d == 0) | (d >= np.finfo(np.float32).tiny)))


@given(tensors(group_sizes=(32,), max_groups=3), KINDS)
def test_gguf_block_bytes_equal_the_reference_quantizer(xg, kind):
    x, _ = xg
    x = np.clip(x, -6e4, 6e4)  # scales must stay finite in FP16, as in any real checkpoint
    assume(scales_are_zero_or_normal(x, kind))
    np.testing.assert_array_equal(quantize_gguf(x, kind), quants.quantize(x, TYPES[kind]))


@given(hnp.arrays(np.float32, (2, 64), elements=st.floats(-100, 100, width=32)), KINDS)
def test_gguf_block_bytes_equal_the_reference_on_hypothesis_floats(x, kind):
    assume(scales_are_zero_or_normal(x, kind))
    np.testing.assert_array_equal(quantize_gguf(x, kind), quants.quantize(x, TYPES[kind]))


@given(tensors(group_sizes=(32,), max_groups=2), KINDS)
def test_gguf_dequantization_equals_the_reference(xg, kind):
    x, _ = xg
    x = np.clip(x, -6e4, 6e4)
    assume(scales_are_zero_or_normal(x, kind))
    b = quantize_gguf(x, kind)
    ours = dequantize_gguf(b, kind, x.shape[-1])
    theirs = quants.dequantize(b, TYPES[kind])
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.astype(np.float32).view(np.uint32))
