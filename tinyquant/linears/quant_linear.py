"""``QuantLinear``: one quantized weight (a QTensor), two execution paths.

    fake path:  y = x Ŵᵀ,   Ŵ = dequantize(QTensor) once (float32)              (weight-only)
                y = s_x s_wᵀ ⊙ (q_x q_wᵀ), the integer-valued sum exactly in floats   (W8A8)
                y = s_x · Σ_g s·(acc_g − z·asum_g), group sums exactly in floats      (W4A8)
    int path:   the Numba kernels on the packed codes (``tinyquant.kernels``):
                weight-only  y = Σ_g s·(Σ q·x − z·Σx)        (prepacked rows-in-lanes layout)
                W8A8         y = s_x · s_w · (q_x q_wᵀ)       (exact int32 accumulation)
                W4A8         y = s_x · Σ_g s·(acc_g − z·asum_g)   (int32 group sums, vpdpbusd)

Both paths compute the same function. Weight-only: they differ only by float32 rounding (the
int path reassociates sums), which the tests bound on the whole model. W8A8 and W4A8: they
agree to the bit — necessarily, since a last-bit difference can flip a per-token activation
code at a rounding tie, and such a flip propagates through the following layers. (W4A8's float
fold has one fixed order, ``kernels.reference.fold_groups``, which both paths call or mirror.)
Refs: Jacob et al. 2018 (fake quantization vs integer inference); Frantar et al. 2023 "GPTQ" and
Lin et al. 2024 "AWQ" (weight-only, group-wise); Xiao et al. 2023 "SmoothQuant" (W8A8).
Shape legend: T tokens (all leading axes flattened), I in features, O out features,
g group size, G = I / g.
"""

from __future__ import annotations

import numpy as np

from tinyquant.kernels import (
    DEQUANT_MIN_TOKENS,
    PackedW8A8,
    needs_overflow_shift,
    pack_w8a8_u8,
    packed_linear_checked,
    prepack,
    prepack_w4a8,
    stack_packed,
    w4a8_packed_linear_checked,
    w8a8_packed_linear_checked,
)
from tinyquant.kernels.lut2 import MAX_TOKENS as LUT2_MAX_TOKENS
from tinyquant.kernels.lut2 import PackedLut2, lut2_fits, lut2_linear_checked, prepack_lut2
from tinyquant.kernels.reference import fold_groups
from tinyquant.quant import (
    QTensor,
    per_channel,
    per_group,
    quantize_activations,
    quantize_tensor,
    unpack,
)

from .protocol import check_input, check_path, exact_int_matmul, register

__all__ = ["QuantLinear"]

INT_KERNEL_BITS = (8, 4, 3, 2)  # storage widths the weight-only kernels run
W4A8_BITS = (4, 3)  # storage widths the W4A8 kernels run (3-bit codes in 4-bit fields)


@register
class QuantLinear:
    """A quantized Linear y = x Wᵀ holding a QTensor W (out, in), run fake-quant or integer.

    Weight-only (``act_bits=None``): any format; the int path runs integer formats of 8/4/3/2
    bits with per-group or per-channel blocks (1, g). ``act_bits=8`` (activations quantized per
    token at run time) takes two kinds of weight: symmetric int8 per-channel (block (1, I), no
    zero) → W8A8; 4- or 3-bit integer codes in blocks (1, g), g a multiple of 8 → W4A8.

    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((96, 64)).astype(np.float32)
    >>> ql = QuantLinear.from_weight(w, "int4", group_size=32)
    >>> ql.in_features, ql.out_features, ql.nbytes   # 96·64/2 codes + 96·2 float32 scales
    (64, 96, 3840)
    >>> x = rng.standard_normal((2, 5, 64)).astype(np.float32)
    >>> y_fake, y_int = ql.forward(x), ql.with_path("int").forward(x)
    >>> y_fake.shape, bool(np.allclose(y_fake, y_int, rtol=1e-4, atol=1e-4))
    ((2, 5, 96), True)
    """

    def __init__(
        self,
        qtensor: QTensor,
        path: str = "fake",
        act_bits: int | None = None,
        kernels: str | None = None,
    ) -> None:
        if not isinstance(qtensor, QTensor):
            raise ValueError(f"qtensor must be a QTensor, got {type(qtensor).__name__}")
        if len(qtensor.shape) != 2:
            raise ValueError(f"a Linear weight is 2-D (out, in), got shape {qtensor.shape}")
        if act_bits not in (None, 8):
            raise ValueError(
                f"act_bits must be None (weight-only) or 8 (W8A8 / W4A8), got {act_bits}"
            )
        self.qtensor, self.act_bits, self.kernels = qtensor, act_bits, kernels
        self.out_features, self.in_features = qtensor.shape
        self._scheme = "weight-only" if act_bits is None else self._check_act8()
        self._path = check_path(path, self.has_int_kernel, f"{qtensor.fmt.name} weights")
        self._w_fake: np.ndarray | None = None  # dequantized weight, made on first fake call
        self._packed = None  # kernel layout, made on first int call
        self._stacks: dict = {}  # forward_shared: (Linears, stacked layout) by their ids
        self._sz: tuple[np.ndarray, np.ndarray] | None = None  # (scale, unsigned zero), made once
        self._packed_std = None  # 2-bit: the weight_only layout beside the lookup one (prefill)

    @classmethod
    def from_weight(
        cls,
        w: np.ndarray,
        fmt: str = "int4",
        group_size: int | None = 128,
        symmetric: bool = True,
        act_bits: int | None = None,
        path: str = "fake",
        kernels: str | None = None,
    ) -> QuantLinear:
        """Round-to-nearest quantize a float weight (O, I) (per-channel when group_size is None).

        >>> QuantLinear.from_weight(np.eye(8, dtype=np.float32), "int8", None, act_bits=8)
        QuantLinear(8 → 8, int8 per-channel, W8A8, path='fake')
        >>> QuantLinear.from_weight(np.eye(64, dtype=np.float32), "int4", 32, act_bits=8)
        QuantLinear(64 → 64, int4 g32, W4A8, path='fake')
        """
        w = np.asarray(w, dtype=np.float32)
        if w.ndim != 2:
            raise ValueError(f"w must be 2-D (out, in), got shape {w.shape}")
        block = per_channel(w.shape) if group_size is None else per_group(w.shape, group_size)
        qt = quantize_tensor(w, fmt, block, symmetric=symmetric)
        return cls(qt, path=path, act_bits=act_bits, kernels=kernels)

    # -- the protocol -----------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """ "fake" (dequantize, float matmul) or "int" (Numba kernels on the codes)."""
        return self._path

    @property
    def has_int_kernel(self) -> bool:
        qt = self.qtensor
        return (qt.fmt.kind == "int" and qt.fmt.storage_bits in INT_KERNEL_BITS
                and qt.block_size[0] == 1)  # fmt: skip

    def with_path(self, path: str) -> QuantLinear:
        return QuantLinear(self.qtensor, path, self.act_bits, self.kernels)

    @property
    def group_size(self) -> int:
        return int(self.qtensor.block_size[1])

    @property
    def nbytes(self) -> int:
        """Bytes of the quantized weight as stored (codes + scales + zeros)."""
        return self.qtensor.nbytes

    def to_state(self, prefix: str = "") -> tuple[dict[str, np.ndarray], dict]:
        arrays, qmeta = self.qtensor.to_state(prefix)
        return arrays, {"type": "QuantLinear", "act_bits": self.act_bits, "qtensor": qmeta}

    @classmethod
    def from_state(cls, arrays: dict, meta: dict, prefix: str = "") -> QuantLinear:
        return cls(QTensor.from_state(arrays, meta["qtensor"], prefix), act_bits=meta["act_bits"])

    def __repr__(self) -> str:
        g = self.group_size
        gran = "per-channel" if g == self.in_features else f"g{g}"
        return (
            f"QuantLinear({self.in_features} → {self.out_features}, {self.qtensor.fmt.name} "
            f"{gran}, {self._scheme}, path={self.path!r})"
        )

    # -- the two paths ----------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """y = x Wᵀ for x (..., I) → (..., O) float32, on the chosen path."""
        x = check_input(x, self.in_features)
        lead = x.shape[:-1]
        x2 = np.ascontiguousarray(x.reshape(-1, self.in_features))  # (T, I)
        y = self._forward_int(x2) if self.path == "int" else self._forward_fake(x2)
        return y.reshape(*lead, self.out_features)

    @staticmethod
    def forward_shared(x: np.ndarray, ws: list[QuantLinear]) -> list[np.ndarray] | None:
        """x W_jᵀ for every Linear of ``ws`` in one kernel call, or None to decline.

        For Linears on the int path of one scheme (weight-only, W4A8, W8A8) sharing
        in_features, group size, bits and kernel family — q, k and v of a block; gate and up:
        their packed blocks are stacked once (``kernels.stack_packed``; each Linear's own layout
        becomes a view of the stack, so nothing is stored twice), then one call computes all
        rows (and, with int8 activations, quantizes x once). Each 64-row block is computed as
        in the Linear's own call, so the values are the same bit for bit. Declines (None: the
        caller runs one ``forward`` each) otherwise, for weight-only prefill (T > 16: BLAS
        slabs, whose sums may depend on the slab's width), and where the weight-only overflow
        guard would rescale x.
        """
        first = ws[0]
        key = tuple(id(w) for w in ws)
        hit = first._stacks.get(key)
        if hit is not None and any(a is not b for a, b in zip(hit[0], ws, strict=True)):
            hit = None  # an id reused by another object
        if hit is None:
            same = (first._scheme, first.in_features, first.group_size,
                    first.qtensor.fmt.storage_bits, first.kernels)  # fmt: skip
            if not all(w.path == "int" and (w._scheme, w.in_features, w.group_size,
                                            w.qtensor.fmt.storage_bits, w.kernels) == same
                       for w in ws):  # fmt: skip
                return None
        x = check_input(x, first.in_features)
        lead = x.shape[:-1]
        x2 = np.ascontiguousarray(x.reshape(-1, first.in_features))  # (T, I)
        weight_only = first._scheme == "weight-only"
        if weight_only and x2.shape[0] > DEQUANT_MIN_TOKENS:
            return None
        if hit is None:
            stack, views = stack_packed([w._int_params() for w in ws])
            for w, view in zip(ws, views, strict=True):
                w._packed = view  # the same values, now inside the stack
            hit = first._stacks[key] = (tuple(ws), stack)
        stack = hit[1]
        if weight_only:
            if needs_overflow_shift(x2, stack):
                return None  # the stack's guard could pick another 2⁻ᵏ than a member's own
            if isinstance(stack, PackedLut2):
                if x2.shape[0] > LUT2_MAX_TOKENS:
                    return None  # each Linear's own weight_only layout serves these tokens
                y = lut2_linear_checked(x2, stack)  # (T, ΣNB·64)
            else:
                y = packed_linear_checked(x2, stack)  # (T, ΣNB·64)
        elif first._scheme == "W4A8":
            y = w4a8_packed_linear_checked(x2, stack, first.kernels)  # (T, ΣNB·64)
        else:
            y = w8a8_packed_linear_checked(x2, stack, stack.kernels)  # (T, ΣNP·64) or (T, ΣO)
        out, r0 = [], 0
        for w in ws:
            out.append(y[:, r0 : r0 + w.out_features].reshape(*lead, w.out_features))
            r0 += _padded_rows(w._packed)  # the member's rows in the stack, padding included
        return out

    def _forward_fake(self, x: np.ndarray) -> np.ndarray:
        if self._scheme == "W4A8":
            return self._forward_fake_w4a8(x)
        if self.act_bits == 8:
            # x̂ Ŵᵀ = s_x s_wᵀ ⊙ (q_x q_wᵀ): the scales factor out of the sum (they sit on t and
            # o); the integer-valued sum is exact (exact_int_matmul), so this float reference
            # and the integer kernel agree to the bit
            if self._w_fake is None:
                self._w_fake = self.qtensor.unpacked_codes()  # q_w (O, I) int8
            q, s = quantize_activations(x, "per_token")  # (T, I) int8, (T,)
            acc = exact_int_matmul(q, self._w_fake)  # (T, O) exact
            return acc * s[:, None] * self.qtensor.scale_values()[None, :, 0]
        if self._w_fake is None:
            self._w_fake = self.qtensor.dequantize().astype(np.float32)  # Ŵ (O, I)
        return (x @ self._w_fake.T).astype(np.float32)  # (T, O)

    def _forward_fake_w4a8(self, x: np.ndarray) -> np.ndarray:
        # y = s_x · Σ_g s·(acc_g − z·asum_g): the group sums acc_g are integers below 2²⁴ (g ≤
        # 8808) or 2⁵³, so a float32 (float64) batched BLAS product is exact in any order; the
        # float fold is the reference's own function — hence the same bits as the int kernel
        T, I = x.shape
        g = self.group_size
        G = I // g
        if self._w_fake is None:
            codes = unpack(self.qtensor.codes, self.qtensor.fmt.storage_bits, I)  # (O, I) unsigned
            dt = np.float32 if g * 15 * 127 < 2**24 else np.float64
            self._w_fake = np.ascontiguousarray(
                codes.reshape(self.out_features, G, g).transpose(1, 2, 0).astype(dt)
            )  # (G, g, O)
        q, s_x = quantize_activations(x, "per_token")  # (T, I) int8, (T,)
        qg = q.reshape(T, G, g)  # (T, G, g)
        qx = qg.transpose(1, 0, 2).astype(self._w_fake.dtype)  # (G, T, g)
        acc = np.matmul(qx, self._w_fake)  # (G, T, O), exact
        asum = qg.sum(axis=2, dtype=np.int32)  # (T, G)
        scale, zero = self._scale_zero()
        return fold_groups(acc, asum, scale, zero, s_x)  # (T, O)

    def _forward_int(self, x: np.ndarray) -> np.ndarray:
        packed = self._int_params()
        if self._scheme == "W4A8":
            return w4a8_packed_linear_checked(x, packed, self.kernels)  # x checked by forward
        if self.act_bits == 8:  # x checked by forward, packed built here
            return w8a8_packed_linear_checked(x, packed, packed.kernels)
        if isinstance(packed, PackedLut2):  # 2-bit: table lookups for decode
            if x.shape[0] <= LUT2_MAX_TOKENS and not needs_overflow_shift(x, packed):
                return lut2_linear_checked(x, packed)
            packed = self._weight_only_params()
        return packed_linear_checked(x, packed)  # x checked by forward, packed built here

    # -- kernel parameters ------------------------------------------------------------------------
    def _check_act8(self) -> str:
        """Which integer-activation scheme the weight allows ("W8A8" or "W4A8"), else an error
        naming both accepted cases."""
        qt = self.qtensor
        I, (b0, g) = self.in_features, qt.block_size
        if qt.fmt.name == "int8" and qt.zero is None and g == I:
            return "W8A8"
        if qt.fmt.kind == "int" and qt.fmt.storage_bits in W4A8_BITS and b0 == 1 and g % 8 == 0:
            return "W4A8"
        raise ValueError(
            "act_bits=8 needs either symmetric int8 per-channel weights (W8A8: format 'int8', "
            f"block_size (1, {I}), no zero-point) or 4-/3-bit integer weights in groups of a "
            f"multiple of 8 (W4A8: e.g. 'uint4' or 'int4', block_size (1, 128)); got "
            f"{qt.fmt.name} block_size {qt.block_size} "
            f"zero={'yes' if qt.zero is not None else 'no'}"
        )

    def _scale_zero(self) -> tuple[np.ndarray, np.ndarray]:
        """(s, z) float32 (O, G) with z for *unsigned* codes (signed formats: z + 2^(b−1)):
        what every integer-code kernel takes; for W4A8 the same two arrays on both paths."""
        if self._sz is not None:
            return self._sz
        qt = self.qtensor
        scale = np.ascontiguousarray(qt.scale_values(), dtype=np.float32)  # (O, G)
        zero = np.zeros(scale.shape, np.float32) if qt.zero is None else qt.zero.astype(np.float32)
        if qt.fmt.signed:
            zero = zero + np.float32(1 << (qt.fmt.storage_bits - 1))  # q_u = q + 2^(b−1)
        self._sz = scale, np.ascontiguousarray(zero)
        return self._sz

    def _int_params(self):
        """The kernel's own layout of the weight, built once (load time)."""
        if self._packed is not None:
            return self._packed
        qt = self.qtensor
        if self._scheme == "W4A8":
            scale, zero = self._scale_zero()
            self._packed = prepack_w4a8(qt.codes, scale, zero, self.group_size,
                                        qt.fmt.storage_bits)  # fmt: skip
            return self._packed
        if self.act_bits == 8:
            # a signed int8 QTensor stores u = q + 128: exactly the VNNI operand
            scale = np.ascontiguousarray(qt.scale_values(), dtype=np.float32)  # (O, 1)
            self._packed = pack_w8a8_u8(np.ascontiguousarray(qt.codes), scale[:, 0].copy(),
                                        self.kernels)  # fmt: skip
            return self._packed
        scale, zero = self._scale_zero()  # (O, G) each
        bits = qt.fmt.storage_bits
        if bits == 2 and lut2_fits(self.in_features, self.group_size):
            self._packed = prepack_lut2(qt.codes, scale, zero, self.group_size)  # lookup tables
        else:
            self._packed = prepack(qt.codes, scale, zero, self.group_size, bits)
        return self._packed

    def _weight_only_params(self):
        """The ``weight_only`` layout (prefill, or a 2-bit weight whose x the lookup kernel
        cannot take), built on first use."""
        packed = self._int_params()
        if not isinstance(packed, PackedLut2):
            return packed
        if self._packed_std is None:
            scale, zero = self._scale_zero()
            self._packed_std = prepack(self.qtensor.codes, scale, zero, self.group_size, 2)
        return self._packed_std


def _padded_rows(packed) -> int:
    """Rows a packed weight occupies in a stack: its 64-row blocks/panels, or its rows."""
    if isinstance(packed, PackedW8A8):
        return packed.u.shape[0] * 64 if packed.kernels == "vnni" else packed.out_features
    return packed.w.shape[0] * 64
