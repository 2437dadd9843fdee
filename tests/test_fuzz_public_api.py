"""Fuzzing the public API: random bad input gets a correct finite result or a one-line
ValueError/TypeError naming an argument — within a second, never another exception (issue 10).

Hypothesis draws random dtypes (float16/32/64, ints, bool, complex), ranks 0–3, shapes with
empty axes, NaN/±Inf/huge values at random positions, sizes (0, negative, 10¹⁰, 2⁶³, floats,
bools, strings, None) and option strings, and throws them at tinyquant.quant, tinyquant.algos,
QuantLinear.from_weight and the recipe constructors. Calls that may reach a Numba kernel run
in a child process (as tests/test_kernels_crashes.py does), so a crash fails a test instead
of killing the run.
"""

import dataclasses
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tinyquant import algos, quant, recipe
from tinyquant.linears import QuantLinear
from tinyquant.quant import FORMATS, QTensor

REPO = Path(__file__).resolve().parents[1]
POISON = [np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45]
DTYPES = [np.float32, np.float32, np.float64, np.float16, np.int8, np.int64, np.bool_, np.complex64]

sizes = st.one_of(
    st.integers(-3, 130),
    st.sampled_from([0, -1, 10**10, 2**63, 32, 64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([32.0, 32.9, True, False, "64", None, np.int64(16)]),
)
bit_widths = st.one_of(st.integers(-1, 10), st.sampled_from([3.5, 4.0, True, "4", None]))
fmts = st.sampled_from(list(FORMATS) + ["int5", "uint1", "", "INT8", None, 4])
conventions = st.sampled_from(list(quant.CONVENTIONS) + ["bogus", "", None])
reals = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, "1", None]))


@st.composite
def arrays(draw, ndim=None, last=None, finite=False):
    """A small array of a random dtype, rank and shape, maybe with NaN/Inf/huge entries."""
    dtype = np.float32 if finite else draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(0, 3)) if ndim is None else ndim
    shape = [draw(st.sampled_from([0, 1, 2, 3, 4, 8, 32, 64])) for _ in range(ndim)]
    if last is not None and ndim:
        shape[-1] = last
    while np.prod(shape) > 4096:
        shape[int(np.argmax(shape))] //= 2
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    magnitude = 10.0 ** draw(st.integers(-40, 38)) if not finite else 1.0
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        x = (rng.standard_normal(shape) * magnitude).astype(dtype)
    if not finite and x.size and x.dtype.kind == "f" and draw(st.booleans()):
        x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from(POISON))
    return x


def _finite(out) -> bool:
    if isinstance(out, QTensor):
        return bool(np.isfinite(out.dequantize()).all())
    if isinstance(out, np.ndarray | np.generic | float):
        a = np.asarray(out)
        return a.dtype.kind not in "fc" or bool(np.isfinite(a).all())
    if isinstance(out, tuple | list):
        return all(_finite(o) for o in out)
    if dataclasses.is_dataclass(out):
        return all(_finite(getattr(out, f.name)) for f in dataclasses.fields(out))
    return True


def outcome(names, fn, *args, **kwargs):
    """Call fn: a finite result, or a one-line ValueError/TypeError naming one of ``names``;
    either way within a second."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            out = fn(*args, **kwargs)
    except (ValueError, TypeError) as err:
        msg = str(err)
        assert msg and "\n" not in msg, f"not one line: {msg!r}"
        named = [n for n in names if re.search(rf"(?<![A-Za-z_]){re.escape(n)}(?![A-Za-z_])", msg)]
        assert named, f"{type(err).__name__}({msg!r}) names none of {names}"
    else:
        assert _finite(out), f"{fn.__name__} returned non-finite values for finite-looking input"
    assert time.perf_counter() - t0 < 2.0, f"{fn.__name__} took {time.perf_counter() - t0:.1f} s"


def block_of(draw, x):
    """A block_size for x: usually a valid one, sometimes a random bad one."""
    if draw(st.booleans()) or np.ndim(x) == 0:
        return tuple(draw(sizes) for _ in range(max(np.ndim(x), 1)))
    return tuple([1] * (np.ndim(x) - 1) + [max(np.shape(x)[-1], 1)])


X = ("x", "block_size", "shape", "fmt", "format", "scale", "zero", "convention", "clip_ratio",
     "symmetric", "every dimension of shape", "every entry of block_size", "lo", "hi")  # fmt: skip


@given(st.data())
def test_affine_quantizers_answer_bad_input_with_a_named_error(data):
    d = data.draw
    x = d(arrays())
    block, fmt, conv = block_of(d, x), d(fmts), d(conventions)
    outcome(X, quant.fake_quantize, x, fmt, block, d(st.booleans()), conv, d(reals))
    outcome(X, quant.choose_qparams, x, fmt, block, d(st.booleans()), conv)
    outcome(X, quant.quantize, x, d(arrays(ndim=d(st.integers(0, 2)))), d(arrays()), fmt)
    outcome(X + ("codes",), quant.dequantize, d(arrays()), d(arrays()), 0, block)
    outcome(X + ("group_size",), quant.per_group, d(st.lists(sizes, max_size=3)), d(sizes))
    outcome(X, quant.check_block_size, np.shape(x), block)


@given(st.data())
def test_packing_and_tensors_answer_bad_input_with_a_named_error(data):
    d = data.draw
    codes = d(arrays()).astype(d(st.sampled_from([np.uint8, np.int8, np.int64, np.float32])))
    names = ("bits", "codes", "n", "packed", "signed codes", "unsigned")
    outcome(names, quant.pack, codes, d(bit_widths))
    outcome(names, quant.to_signed, codes, d(bit_widths))
    outcome(names, quant.to_unsigned, codes, d(bit_widths))
    outcome(names, quant.unpack, codes, d(bit_widths), d(sizes))
    x = d(arrays())
    names = X + ("scale_dtype", "dq_block", "kind", "gguf", "n", "data", "last dimension")
    outcome(names, quant.quantize_tensor, x, d(fmts), block_of(d, x),
            scale_dtype=d(st.sampled_from(["float32", "float16", "bf16"])))  # fmt: skip
    outcome(names, quant.quantize_codebook, x, d(st.sampled_from(["nf4", "fp4_bnb", "int4"])),
            None, d(st.booleans()), d(sizes))  # fmt: skip
    outcome(names, quant.quantize_gguf, x, d(st.sampled_from(["q8_0", "q4_0", "q4_1", "q2"])))
    outcome(names, quant.dequantize_gguf, codes, d(st.sampled_from(["q8_0", "q4_1"])), d(sizes))


OBS = {"minmax": (), "moving_average": ("momentum",), "percentile": ("percentile",),
       "mse": ("steps",), "kl": ("bins",)}  # fmt: skip


@given(st.data())
def test_observers_answer_bad_input_with_a_named_error(data):
    d = data.draw
    kind = d(st.sampled_from(sorted(OBS)))
    kwargs = {k: d(st.one_of(sizes, reals)) for k in OBS[kind] if d(st.booleans())}
    if kind in ("minmax", "moving_average") and d(st.booleans()):
        kwargs["axis"] = d(st.sampled_from([None, -1, 0, 1, 1.0]))
    names = ("fmt", "format", "convention", "axis", "x") + OBS[kind]

    def run():
        obs = quant.OBSERVERS[kind](d(fmts), convention=d(conventions), **kwargs)
        return obs.observe(d(arrays())).qparams()

    outcome(names, run)


W_NAMES = ("W", "H", "bits", "group_size", "chunk", "damp", "scale_dtype", "group_params_from",
           "x", "max_val", "n_candidates", "max_shrink", "n_tokens", "convention", "fmt", "format",
           "every dimension of shape", "in_features")  # fmt: skip


@given(st.data())
def test_weight_algorithms_answer_bad_input_with_a_named_error(data):
    d = data.draw
    W = d(arrays(ndim=d(st.sampled_from([2, 2, 2, 1, 3]))))
    I = W.shape[-1] if W.ndim else 1
    H = d(st.one_of(st.just(np.eye(I)), arrays(ndim=2, last=I)))
    g = d(st.one_of(sizes, st.just(None)))
    outcome(W_NAMES, algos.gptq_quantize, W, H, d(bit_widths), g, chunk=d(sizes),
            damp=d(reals), group_params_from=d(st.sampled_from(["current", "chunk_start", "x"])),
            scale_dtype=d(st.sampled_from(["float32", "float16", "fp8"])))  # fmt: skip
    outcome(W_NAMES, algos.rtn_quantize, W, d(fmts), g)
    outcome(W_NAMES, algos.awq_fake_quantize, W, d(bit_widths), g)
    outcome(W_NAMES, algos.awq_quantize_tensor, W, d(bit_widths), g)
    outcome(W_NAMES, algos.quantize_rows, W, d(bit_widths), g, mse=d(st.booleans()))
    outcome(W_NAMES, algos.search_clip, W, d(arrays(ndim=2, last=I)), d(bit_widths), g,
            n_tokens=d(sizes))  # fmt: skip
    outcome(W_NAMES, algos.apply_clip, W, d(arrays(ndim=2)))


R_NAMES = ("x", "n", "n (the rotated dimension)", "seed", "act_max", "alpha", "weights[0]",
           "weights", "s", "act_max_tensor", "qmax", "Hadamard", "x_mean_abs", "alphas")  # fmt: skip


@given(st.data())
def test_rotation_and_smoothing_answer_bad_input_with_a_named_error(data):
    d = data.draw
    x = d(arrays())
    outcome(R_NAMES, algos.hadamard_transform, x)
    outcome(R_NAMES, lambda: algos.RandomHadamard(d(sizes), d(sizes)).apply(x))
    outcome(R_NAMES, algos.hadamard_matrix, d(sizes))
    I = x.shape[-1] if x.ndim else 1
    a = d(arrays(ndim=1, last=I))
    outcome(R_NAMES, algos.smooth_scales, a, [d(arrays(ndim=2, last=I))], d(reals))
    outcome(R_NAMES, algos.search_alpha, x, [d(arrays(ndim=2, last=I))])
    outcome(R_NAMES, algos.static_act_scale, d(reals))
    outcome(R_NAMES, algos.search_scale, a, [d(arrays(ndim=2, last=I))],
            lambda ws: ws[0], lambda w: w)  # fmt: skip


@given(st.data())
def test_quant_linear_from_weight_answers_bad_input_with_a_named_error(data):
    d = data.draw
    names = X + ("w", "group_size", "act_bits", "path", "kernels")
    w = d(arrays(ndim=d(st.sampled_from([2, 2, 1]))))
    g = d(st.one_of(st.integers(-2, 70), st.sampled_from([None, 10**10, "8"])))
    outcome(names, QuantLinear.from_weight, w, d(fmts), g, d(st.booleans()))


@given(st.data())
def test_recipe_constructors_answer_bad_input_with_a_named_error(data):
    d = data.draw
    names = ("fmt", "format", "group_size", "per_tensor", "scale_dtype", "double_quant",
             "granularity", "activations", "alpha", "pairs", "threshold", "cast", "static")  # fmt: skip
    gs = d(st.one_of(st.integers(-2, 300), st.sampled_from([None, 32.0, True, "32"])))
    outcome(names, recipe.Weights, d(fmts), gs, d(st.booleans()), d(st.booleans()),
            d(st.sampled_from(["float16", "float32", "int8"])), d(st.booleans()))  # fmt: skip
    outcome(names, recipe.Smooth, d(st.floats(-1, 2)), d(st.sampled_from([("qkv",), (), ("x",)])))
    outcome(names, recipe.Activations, d(st.sampled_from(["per_token", "per_tensor", "x"])),
            d(st.booleans()), d(fmts))  # fmt: skip


CHILD = """
import numpy as np
from tinyquant.linears import QuantLinear
from tinyquant.quant import FORMATS
rng = np.random.default_rng(0)
fmts = ["int8", "int4", "uint4", "int3", "int2", "nf4", "fp8_e4m3"]
for case in range(60):
    O, I = int(rng.choice([1, 3, 8, 64])), int(rng.choice([0, 1, 32, 64, 96]))
    w = rng.standard_normal((O, I)).astype(np.float32) * 10.0 ** rng.integers(-30, 38)
    if w.size and rng.random() < 0.3:
        w.flat[rng.integers(w.size)] = rng.choice([np.nan, np.inf, 3.4e38])
    x = rng.standard_normal((int(rng.choice([0, 1, 5])), max(I, 1))).astype(np.float32)
    if x.size and rng.random() < 0.3:
        x.flat[0] = np.nan
    try:
        lin = QuantLinear.from_weight(w, str(rng.choice(fmts)), int(rng.choice([32, 64])),
                                      act_bits=[None, 8][case % 2], path="int")
        lin.forward(x)
    except (ValueError, TypeError) as e:
        assert "\\n" not in str(e), str(e)
print("ok")
"""


def test_the_integer_path_never_crashes_on_random_bad_input():
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env,
                       timeout=900)  # fmt: skip
    assert r.returncode >= 0, f"child killed by signal {-r.returncode}:\n{r.stderr[-3000:]}"
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
