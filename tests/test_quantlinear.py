"""QuantLinear: the fake-quant and integer paths compute the same Linear, and the same model.

The model tests use the shipped checkpoint when it exists, else a randomly initialised model of
the shipped configuration (seed 0): the property — the two paths agree — does not depend on the
weights being trained, only on the quantized weights being the same on both paths.
"""

import numpy as np
import pytest

from tinyquant.kernels import reference, vnni
from tinyquant.linears import QuantLinear
from tinyquant.llm import model
from tinyquant.llm.checkpoint import SHIPPED, load_checkpoint
from tinyquant.llm.generate import generate
from tinyquant.quant import quantize_tensor

KINDS = ["portable"] + (["vnni"] if vnni.has_vnni() else [])
# (format, group size, act_bits): the schemes the integer path runs
SCHEMES = [("int8", 128, None), ("int4", 128, None), ("uint4", 64, None), ("int3", 128, None),
           ("int2", 64, None), ("int8", None, 8)]  # fmt: skip


def _model():
    if SHIPPED.exists():
        params, cfg, _ = load_checkpoint()
    else:
        cfg = model.Config()
        params = model.init_params(cfg, seed=0)
    return params, cfg


def _quantize(params, fmt, g, act_bits, path, kernels=None):
    out = dict(params)
    for name, w in params.items():
        if w.ndim == 2 and name != "token_embd.weight":
            gs = w.shape[1] if g is None else g
            qt = quantize_tensor(w, fmt, (1, gs), symmetric=not fmt.startswith("u"))
            out[name] = QuantLinear(qt, path=path, act_bits=act_bits, kernels=kernels)
    return out


@pytest.mark.parametrize("fmt, g, act_bits", SCHEMES)
@pytest.mark.parametrize("T", [1, 7, 40])
def test_fake_and_int_paths_agree_on_one_linear(fmt, g, act_bits, T):
    rng = np.random.default_rng(T)
    w = rng.standard_normal((100, 256)).astype(np.float32)
    x = rng.standard_normal((T, 256)).astype(np.float32)
    ql = QuantLinear.from_weight(w, fmt, g, symmetric=not fmt.startswith("u"), act_bits=act_bits)
    y_fake = ql.forward(x)
    y_int = ql.with_path("int").forward(x)
    if act_bits == 8:  # exact integer sums on both paths
        assert np.array_equal(y_fake, y_int)
    else:  # x Ŵᵀ in float32, summed in different orders
        bound = 1e-5 * (np.abs(x) @ np.abs(ql.qtensor.dequantize()).T) + 1e-6
        assert np.all(np.abs(y_fake - y_int) <= bound)


def test_forward_keeps_leading_axes_and_returns_float32():
    ql = QuantLinear.from_weight(np.ones((6, 64), np.float32), "int4", 32, path="int")
    y = ql.forward(np.ones((2, 3, 64)))
    assert y.shape == (2, 3, 6) and y.dtype == np.float32


def test_nbytes_and_features_come_from_the_qtensor():
    qt = quantize_tensor(np.ones((96, 256), np.float32), "int4", (1, 128))
    ql = QuantLinear(qt)
    assert (ql.in_features, ql.out_features, ql.nbytes) == (256, 96, qt.nbytes)
    assert ql.nbytes == 96 * 256 // 2 + 96 * 2 * 4


def test_int_path_refuses_codebook_formats():
    qt = quantize_tensor(np.ones((8, 64), np.float32), "nf4", (1, 64))
    ql = QuantLinear(qt)  # the fake path runs any QTensor
    assert ql.forward(np.ones((1, 64), np.float32)).shape == (1, 8)
    assert not ql.has_int_kernel
    with pytest.raises(ValueError, match="path='fake'"):
        ql.with_path("int")


def test_w8a8_needs_symmetric_int8_per_channel_weights():
    qt = quantize_tensor(np.ones((8, 64), np.float32), "int8", (1, 32))
    with pytest.raises(ValueError, match="per-channel"):
        QuantLinear(qt, act_bits=8)


def test_unknown_path_is_an_error():
    with pytest.raises(ValueError, match="path"):
        QuantLinear.from_weight(np.ones((4, 32), np.float32), "int8", 32, path="fast")


@pytest.mark.parametrize("fmt, g, act_bits", [s for s in SCHEMES if s[2] is None])
def test_weight_only_model_logits_agree_between_the_fake_and_int_paths(fmt, g, act_bits):
    # both paths compute x Ŵᵀ with the same Ŵ; only float32 summation order differs
    # (measured: relative logit difference ≈ 6e-7)
    params, cfg = _model()
    tokens = np.frombuffer(b"ROMEO: But soft, what light through yonder window breaks?", np.uint8)
    tokens = tokens.astype(np.int64)
    fake = model.forward(_quantize(params, fmt, g, act_bits, "fake"), tokens, cfg)
    logits = model.forward(_quantize(params, fmt, g, act_bits, "int"), tokens, cfg)
    assert np.abs(logits - fake).max() <= 1e-4 * np.abs(fake).max()
    assert np.array_equal(logits.argmax(-1), fake.argmax(-1))


@pytest.mark.parametrize("kind", KINDS)
def test_w8a8_model_logits_are_identical_on_the_fake_and_int_paths(kind):
    # the W8A8 fake path sums integer-valued floats exactly (float64), so every Linear — and
    # hence the whole model — gives the same bits as the integer kernels
    params, cfg = _model()
    tokens = np.frombuffer(b"ROMEO: But soft, what light through yonder window breaks?", np.uint8)
    tokens = tokens.astype(np.int64)
    fake = model.forward(_quantize(params, "int8", None, 8, "fake"), tokens, cfg)
    logits = model.forward(_quantize(params, "int8", None, 8, "int", kind), tokens, cfg)
    assert np.array_equal(logits, fake)


def test_w8a8_fake_path_is_the_float_product_of_the_dequantized_operands():
    rng = np.random.default_rng(9)
    w = rng.standard_normal((40, 96)).astype(np.float32)
    x = rng.standard_normal((5, 96)).astype(np.float32)
    ql = QuantLinear.from_weight(w, "int8", None, act_bits=8)
    q, s = reference.quantize_per_token(x)
    x_hat = q.astype(np.float64) * s[:, None]
    w_hat = ql.qtensor.dequantize().astype(np.float64)
    np.testing.assert_allclose(ql.forward(x), x_hat @ w_hat.T, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # 2 × 30 decoding steps of the whole model per case
@pytest.mark.parametrize("fmt, g, act_bits", [("int4", 128, None), ("int8", None, 8)])
def test_greedy_generation_is_the_same_on_both_paths(fmt, g, act_bits):
    params, cfg = _model()
    texts = [
        generate(_quantize(params, fmt, g, act_bits, path), cfg, "ROMEO:", 30, top_k=1)
        for path in ("fake", "int")
    ]
    assert texts[0] == texts[1]


def test_with_path_returns_a_new_linear_and_leaves_the_original_on_its_path():
    ql = QuantLinear.from_weight(np.ones((6, 64), np.float32), "int4", 32)
    fast = ql.with_path("int")
    assert (ql.path, fast.path, fast.qtensor is ql.qtensor) == ("fake", "int", True)


def test_both_paths_reject_non_finite_inputs_with_the_same_message():
    ql = QuantLinear.from_weight(np.ones((6, 64), np.float32), "int4", 32)
    x = np.ones((2, 64), np.float32)
    x[1, 3] = np.nan
    for lin in (ql, ql.with_path("int")):
        with pytest.raises(ValueError, match="NaN or Inf"):
            lin.forward(x)


@pytest.mark.parametrize("fmt, g, act_bits", [("int4", 128, None), ("int2", 64, None),
                                              ("int8", 256, None), ("int3", 32, None),
                                              ("int4", 128, 8), ("int3", 32, 8), ("int8", None, 8)])  # fmt: skip
@pytest.mark.parametrize("T", [1, 3, 5, 16, 20])
def test_linears_sharing_an_input_in_one_call_equal_their_own_calls_bit_for_bit(
    fmt, g, act_bits, T
):
    rng = np.random.default_rng(T)
    if act_bits is None and T > 16:
        pytest.skip("weight-only prefill declines (tested below)")
    ws = [QuantLinear.from_weight(rng.standard_normal((o, 256)).astype(np.float32), fmt, g,
                                  act_bits=act_bits).with_path("int")
          for o in (130, 64, 7)]  # fmt: skip
    x = rng.standard_normal((1, T, 256)).astype(np.float32)
    alone = [w.forward(x) for w in ws]
    shared = QuantLinear.forward_shared(x, ws)
    if shared is None:  # declined only where 2-bit tables give way to each Linear's own layout
        assert fmt == "int2" and T > 3
        shared = model.linears(x, ws)
    assert all(np.array_equal(a, b) for a, b in zip(alone, shared, strict=True))
    again = [w.forward(x) for w in ws]  # the Linears' own layouts are now views of the stack
    assert all(np.array_equal(a, b) for a, b in zip(alone, again, strict=True))
    assert model.linears(x, ws)[2].shape == (1, T, 7)


def test_forward_shared_declines_prefill_mixed_kinds_and_the_fake_path():
    rng = np.random.default_rng(0)
    w4 = QuantLinear.from_weight(rng.standard_normal((8, 64)).astype(np.float32), "int4", 32)
    w8 = QuantLinear.from_weight(rng.standard_normal((8, 64)).astype(np.float32), "int8", 32)
    x1, x17 = (rng.standard_normal((t, 64)).astype(np.float32) for t in (1, 17))
    i4, i8 = w4.with_path("int"), w8.with_path("int")
    assert QuantLinear.forward_shared(x1, [w4, w4]) is None  # fake path
    assert QuantLinear.forward_shared(x1, [i4, i8]) is None  # 4 and 8 bits
    assert QuantLinear.forward_shared(x17, [i4, i4]) is None  # prefill: BLAS slabs
    assert np.array_equal(model.linears(x17, [i4, i8])[1], i8.forward(x17))


@pytest.mark.parametrize("kind", ["portable", "vnni"] if vnni.has_vnni() else ["portable"])
def test_w8a8_linears_sharing_an_input_equal_their_own_calls_in_either_kernel_layout(kind):
    rng = np.random.default_rng(3)
    ws = [QuantLinear.from_weight(rng.standard_normal((o, 96)).astype(np.float32), "int8", None,
                                  act_bits=8, kernels=kind).with_path("int")
          for o in (70, 5)]  # fmt: skip
    x = rng.standard_normal((2, 96)).astype(np.float32)
    alone = [w.forward(x) for w in ws]
    shared = QuantLinear.forward_shared(x, ws)
    assert shared is not None and all(
        np.array_equal(a, b) for a, b in zip(alone, shared, strict=True)
    )
