"""bitsandbytes' 8-bit dynamic map and blockwise search, bit for bit (so double quant is exact).

Oracles: (1) ``create_dynamic_map(signed=True)`` recomputed in exact rational arithmetic —
torch's float32 linspace (the kernel's multiply-add fused, one rounding) rounded to float32 by
hand — then float32 midpoints and decade factors as torch computes them; (2) a one-value-at-
a-time transcription of the CUDA kernel ``dQuantize<0>`` (binary search, then the final pivot
against the bracket on x's side); (3) the values bitsandbytes returned for the issue's example.
"""

from fractions import Fraction

import numpy as np

from tinyquant.quant.codebook import encode_codebook, quantize_codebook
from tinyquant.quant.formats import DYNAMIC8_CODE

F = np.float32


def round_to_float32(r: Fraction) -> np.float32:
    """The float32 nearest to the rational r, ties to even (exact comparisons)."""
    c = F(float(r))
    cands = [np.nextafter(c, F(-np.inf)), c, np.nextafter(c, F(np.inf))]
    dist = [abs(Fraction(float(v)) - r) for v in cands]
    best = min(dist)
    ties = [v for v, d in zip(cands, dist, strict=True) if d == best]
    return min(ties, key=lambda v: int(v.view(np.uint32)) & 1)


def torch_linspace(start, end, steps):
    s, e = F(start), F(end)
    step = F((e - s) / F(steps - 1))
    out = []
    for idx in range(steps):  # fused multiply-add: exact product and sum, one rounding
        if idx < steps // 2:
            out.append(round_to_float32(Fraction(float(s)) + Fraction(float(step)) * idx))
        else:
            k = steps - idx - 1
            out.append(round_to_float32(Fraction(float(e)) - Fraction(float(step)) * k))
    return np.array(out, F)


def create_dynamic_map():
    data = []
    for i in range(7):
        b = torch_linspace(0.1, 1.0, 2**i + 1)
        means = (b[:-1] + b[1:]) / F(2.0)
        data += (F(10.0 ** (i - 6)) * means).tolist() + (F(-(10.0 ** (i - 6))) * means).tolist()
    return np.array(sorted(data + [0.0, 1.0]), F)


def dquantize(code, x):
    """bitsandbytes csrc/kernels.cu dQuantize<0>, transcribed for one float32 value."""
    pivot, upper_pivot, lower_pivot = 127, 255, 0
    lower, upper = F(-1.0), F(1.0)
    val = code[pivot]
    i = 64
    while i > 0:
        if x > val:
            lower_pivot, lower, pivot = pivot, val, pivot + i
        else:
            upper_pivot, upper, pivot = pivot, val, pivot - i
        val = code[pivot]
        i >>= 1
    if upper_pivot == 255:
        upper = code[upper_pivot]
    if lower_pivot == 0:
        lower = code[lower_pivot]
    if x > val:
        return upper_pivot if x > (upper + val) * F(0.5) else pivot
    return lower_pivot if x < (lower + val) * F(0.5) else pivot


def test_dynamic_map_equals_create_dynamic_map_entry_for_entry():
    want = create_dynamic_map()
    assert np.array(DYNAMIC8_CODE, F).view(np.uint32).tolist() == want.view(np.uint32).tolist()


def test_numpy_linspace_would_miss_22_entries_by_at_most_2_ulp():
    """The figure measured against bitsandbytes itself: a two-rounding linspace is wrong."""
    data = []
    for i in range(7):
        b = np.linspace(0.1, 1, 2**i + 1, dtype=F)
        m = F(10.0 ** (i - 6)) * ((b[:-1] + b[1:]) / F(2.0))
        data += m.tolist() + (-m).tolist()
    naive = np.array(sorted(data + [0.0, 1.0]), F)
    ours = np.array(DYNAMIC8_CODE, F)
    ulps = np.abs(naive.view(np.int32).astype(np.int64) - ours.view(np.int32))
    assert int((ulps > 0).sum()) == 22 and int(ulps.max()) == 2


def test_the_issue_example_gets_bitsandbytes_codes_including_255():
    qt = quantize_codebook(F([1.0, 0.6, -0.5, 0.1]), "dynamic8", block_size=(4,))
    assert qt.codes.tolist() == [255, 226, 35, 190]


def test_dynamic_search_equals_dquantize_on_codes_midpoints_and_random_values():
    code = np.array(DYNAMIC8_CODE, F)
    mids = (code[:-1] + code[1:]) * F(0.5)
    near = np.concatenate([np.nextafter(mids, F(-2)), np.nextafter(mids, F(2))])
    rng = np.random.default_rng(0)
    rand = np.concatenate([rng.uniform(-1, 1, 3000), rng.normal(size=2000) * 1e-4])
    y = np.concatenate([code, mids, near, rand.astype(F), F([-1.0, 1.0, 0.0, -0.0])]).astype(F)
    got = encode_codebook(y, "dynamic8")
    assert got.tolist() == [dquantize(code, v) for v in y]


def test_double_quantized_nf4_absmax_codes_equal_dquantize_of_the_centred_absmax():
    rng = np.random.default_rng(1)
    w = (rng.standard_t(3, size=(64, 1024)) * 0.02).astype(F)
    w[3, :64] = 0.0  # an all-zero block
    w[5, 128:192] = 1e-30  # a tiny constant block
    w[7, 7] = 3.0  # one outlier
    w[9, 256:320] = -np.abs(w[9, 256:320])  # a negative-only block
    w[11, 0:64] = 1e-40  # subnormal
    w[13, 64:128] = 1e-30
    with np.errstate(over="ignore"):  # 1/absmax of the subnormal block is inf, as in the kernel
        qt = quantize_codebook(w, "nf4", double_quant=True)
    absmax = np.abs(w).reshape(-1, 64).max(axis=1)
    c2 = absmax - F(qt.scale_offset)
    c2 = np.concatenate([c2, np.zeros((-c2.size) % 256, F)]).reshape(-1, 256)
    code = np.array(DYNAMIC8_CODE, F)
    want = []
    for blk in c2:  # kQuantizeBlockwise: y = x · (1/absmax) in float32, then dQuantize
        inv = F(1.0) / np.abs(blk).max()
        want += [dquantize(code, F(v * inv)) for v in blk]
    assert qt.scale.codes.reshape(-1).tolist() == want


def test_dquantize_holds_on_huge_tiny_and_one_signed_normalised_blocks():
    code = np.array(DYNAMIC8_CODE, F)
    rng = np.random.default_rng(2)
    for scale in (1e30, 1e-30, 1e-40):
        for sign in (1, -1, None):
            x = rng.normal(size=256).astype(F) * F(scale)
            if sign is not None:
                x = (sign * np.abs(x)).astype(F)
            with np.errstate(over="ignore", invalid="ignore"):  # 1/1e-40 = inf, as in CUDA
                inv = F(1.0) / np.abs(x).max()
                y = (x * inv).astype(F)
                got = encode_codebook(y, "dynamic8").tolist()
            assert got == [dquantize(code, v) for v in y]
