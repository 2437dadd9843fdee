"""Counted loops in LLVM IR for Numba intrinsics: the scaffolding both micro-kernels share.

The two hand-written inner loops (``vnni``'s GEMM tile, ``unpack_dot``'s unpack-and-FMA) have
one shape; only the body and the final store differ:

    accs = [0] · n_acc
    for i in range(n):              # skipped when n ≤ 0
        accs = body(i, accs)        # loads, prefetch, vector multiply-adds
    return accs                     # the caller stores them

In SSA form that is three blocks, entry → loop ⟲ → done, with one phi per accumulator at the top
of the loop (0 from entry, the new value from the loop's end) and one more in done (0 when the
loop never ran). ``counted_loop`` writes those blocks and phis; ``declare``, ``prefetch`` and
``broadcast`` are the three other lines both kernels needed; ``store_vectors`` writes a run of
accumulators back to memory, as every kernel ends.

Caching caveat (as in ``unpack_dot``): Numba's on-disk cache of the calling kernels is keyed
on *their* source; after editing this file, clear the ``__pycache__`` of ``kernels/``.

Ref: LLVM Language Reference Manual, the ``phi`` instruction and ``llvm.prefetch``.
Shape legend: n trip count (i64), n_acc accumulators of one vector type, L lanes.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir
from numba.core import cgutils

I8, I32, I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)

Body = Callable[[ir.Value, list[ir.Value]], list[ir.Value]]


def declare(builder: ir.IRBuilder, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """The LLVM function ``name`` (an intrinsic such as ``llvm.fma.v16f32``) in this module."""
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def prefetch(builder: ir.IRBuilder, ptr: ir.Value, offset: int) -> None:
    """Software prefetch of the byte at ``ptr + offset``: read, keep in all cache levels, data."""
    fn = declare(builder, "llvm.prefetch.p0", ir.VoidType(), [I8.as_pointer(), I32, I32, I32])
    builder.call(fn, [builder.gep(ptr, [I64(offset)]), I32(0), I32(3), I32(1)])


def broadcast(builder: ir.IRBuilder, scalar: ir.Value, vtype: ir.VectorType) -> ir.Value:
    """``scalar`` in all L lanes of a ``vtype`` vector (insert into lane 0, shuffle with mask 0)."""
    undef = ir.Constant(vtype, ir.Undefined)
    lane0 = builder.insert_element(undef, scalar, I32(0))
    splat0 = ir.Constant(ir.VectorType(I32, vtype.count), [0] * vtype.count)
    return builder.shuffle_vector(lane0, undef, splat0)


def counted_loop(
    builder: ir.IRBuilder, n: ir.Value, n_acc: int, zero: ir.Constant, body: Body, name: str
) -> list[ir.Value]:
    """Emit ``for i in range(n): accs = body(i, accs)`` from accs = [zero] · n_acc.

    ``body(i, accs)`` builds one iteration at the builder's position and returns the new
    accumulators (same count and type). Returns their final values, valid in the block the
    builder is left in (``{name}.done``): ``zero`` when n ≤ 0.

    >>> fnty = ir.FunctionType(I64, [I64])
    >>> module = ir.Module(); f = ir.Function(module, fnty, "sum_to")
    >>> builder = ir.IRBuilder(f.append_basic_block("entry"))
    >>> (total,) = counted_loop(builder, f.args[0], 1, I64(0),
    ...                         lambda i, accs: [builder.add(accs[0], i)], "sum")
    >>> _ = builder.ret(total)
    >>> import llvmlite.binding as llvm; llvm.parse_assembly(str(module)).verify()  # valid IR
    >>> [b.name for b in f.blocks]
    ['entry', 'sum.loop', 'sum.done']
    """
    entry = builder.block
    loop = builder.append_basic_block(f"{name}.loop")
    done = builder.append_basic_block(f"{name}.done")
    builder.cbranch(builder.icmp_signed(">", n, I64(0)), loop, done)

    # loop: i and the accumulators are phis — 0 on entry, the previous iteration's value after
    builder.position_at_end(loop)
    i = builder.phi(I64, f"{name}.i")
    i.add_incoming(I64(0), entry)
    accs = []
    for _ in range(n_acc):
        p = builder.phi(zero.type)
        p.add_incoming(zero, entry)
        accs.append(p)
    new = body(i, accs)
    latch = builder.block  # the body may have ended in a block of its own
    i_next = builder.add(i, I64(1))
    i.add_incoming(i_next, latch)
    for p, v in zip(accs, new, strict=True):
        p.add_incoming(v, latch)
    builder.cbranch(builder.icmp_signed("<", i_next, n), loop, done)

    # done: all phis first (LLVM wants them at the top of the block)
    builder.position_at_end(done)
    fins = []
    for v in new:
        fin = builder.phi(zero.type)
        fin.add_incoming(zero, entry)
        fin.add_incoming(v, latch)
        fins.append(fin)
    return fins


def store_vectors(builder: ir.IRBuilder, ptr: ir.Value, vectors: list[ir.Value]) -> None:
    """Store ``vectors`` (each L floats) one after another from the float pointer ``ptr``."""
    for k, v in enumerate(vectors):
        at = builder.gep(ptr, [I64(v.type.count * k)])
        builder.store(v, builder.bitcast(at, v.type.as_pointer()), align=4)
