"""``tinyquant export gguf`` and ``tinyquant import gguf``: the CLI for export/gguf.py.

    tinyquant export gguf --type Q4_K_M --out m.gguf [--imatrix [FILE]] [--checkpoint C]
    tinyquant import gguf m.gguf                 # prints the config and each tensor's type
    tinyquant export onnx --recipe w8a8-o3 --out m.onnx      # ONNX Runtime (export/onnx.py)
    tinyquant export tflite --block 0 --out b0.tflite        # LiteRT int8 (export/tflite.py)

``--imatrix`` without a file computes the importance matrix from calibration text (and
``--imatrix-out`` saves it in llama.cpp's format); with a file, reads llama.cpp's GGUF imatrix.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["add_export_commands"]


def _cmd_export(args) -> int:
    from tinyquant.export.gguf import export_gguf
    from tinyquant.export.imatrix import compute_imatrix, read_imatrix, write_imatrix
    from tinyquant.llm.checkpoint import load_checkpoint
    from tinyquant.llm.data import calibration_samples

    params, cfg, _ = load_checkpoint(args.checkpoint)
    im = None
    if args.imatrix == "":  # --imatrix with no file: calibrate now
        im, n = compute_imatrix(params, cfg, calibration_samples(args.calib, cfg.context))
        if args.imatrix_out:
            write_imatrix(args.imatrix_out, im, n, cfg.context)
    elif args.imatrix:
        im = read_imatrix(args.imatrix)
    t0 = time.perf_counter()
    types = export_gguf(params, cfg, args.out, args.type, imatrix=im)
    dt = time.perf_counter() - t0
    n_w = sum(int(np.prod(v.shape)) for v in params.values())
    from pathlib import Path

    size = Path(args.out).stat().st_size
    counts: dict[str, int] = {}
    for t in types.values():
        counts[t] = counts.get(t, 0) + 1
    mix = ", ".join(f"{k}×{v}" for k, v in sorted(counts.items()))
    print(f"wrote {args.out}: {args.type}{' + imatrix' if im else ''}, {size / 1e6:.2f} MB, "
          f"{8 * size / n_w:.3f} bits/weight (file), tensors {mix}, {dt:.1f} s")  # fmt: skip
    return 0


def _cmd_import(args) -> int:
    from tinyquant.export.gguf import import_gguf

    params, cfg, types = import_gguf(args.file)
    print(cfg)
    for name, t in types.items():
        print(f"{name:28s} {t:5s} {tuple(params[name].shape)}")
    return 0


def add_export_commands(sub) -> None:
    """Add ``export gguf`` and ``import gguf`` to an argparse subparsers object."""
    from tinyquant.export.mix import FILE_TYPES

    p = sub.add_parser(
        "export",
        help="write the model for another runtime (GGUF, ONNX, TFLite)",
        description="Export a checkpoint to a GGUF v3 file that llama.cpp runs.",
    )
    fmt = p.add_subparsers(dest="format", required=True, parser_class=type(p))
    g = fmt.add_parser("gguf", help="GGUF v3, llama architecture, llama-quantize's type mixes")
    g.add_argument("--type", default="Q4_K_M", choices=list(FILE_TYPES), help="file type")
    g.add_argument("--out", required=True, help="the .gguf file to write")
    g.add_argument("--imatrix", nargs="?", const="", default=None,
                   help="use an importance matrix: a llama.cpp imatrix file, or none to compute "
                   "it from calibration text")  # fmt: skip
    g.add_argument("--imatrix-out", default=None, help="save the computed imatrix (GGUF)")
    g.add_argument("--calib", type=int, default=16, help="calibration sequences (default 16)")
    g.add_argument("--checkpoint", default=None, help="the FP32 checkpoint (default: shipped)")
    g.set_defaults(func=_cmd_export)
    add_onnx_command(fmt)
    add_tflite_command(fmt)

    p = sub.add_parser(
        "import",
        help="read a GGUF file back into tinyquant",
        description="Read a llama-architecture GGUF file (dequantizing it).",
    )
    fmt = p.add_subparsers(dest="format", required=True, parser_class=type(p))
    g = fmt.add_parser("gguf", help="a GGUF v3 file of architecture llama")
    g.add_argument("file", help="the .gguf file")
    g.set_defaults(func=_cmd_import)


def _cmd_export_onnx(args) -> int:
    from pathlib import Path

    from tinyquant.export.onnx import export_onnx
    from tinyquant.llm.checkpoint import load_checkpoint
    from tinyquant.llm.data import calibration_samples
    from tinyquant.presets import get_recipe
    from tinyquant.qmodel import quantize_model

    params, cfg, _ = load_checkpoint(args.checkpoint)
    recipe = get_recipe(args.recipe)
    calib = calibration_samples(args.calib, cfg.context) if recipe.needs_calibration else None
    model = quantize_model(params, cfg, recipe, calib)
    how = export_onnx(model.params, cfg, args.out)
    counts: dict[str, int] = {}
    for h in how.values():
        counts[h] = counts.get(h, 0) + 1
    kinds = "; ".join(f"{k} ×{v}" for k, v in sorted(counts.items()))
    print(f"wrote {args.out}: {recipe.name}, {Path(args.out).stat().st_size / 1e6:.2f} MB, {kinds}")
    return 0


def add_onnx_command(fmt) -> None:
    """``export onnx``: the model (fp32, W8A8 QDQ, 4-bit MatMulNBits) as an ONNX graph."""
    g = fmt.add_parser("onnx", help="ONNX graph for ONNX Runtime (fp32, w8a8*, 4-bit integer)")
    g.add_argument("--recipe", default="fp32", help="a preset: fp32, w8a8, w8a8-o3, w4-rtn-g128…")
    g.add_argument("--out", required=True, help="the .onnx file to write")
    g.add_argument("--calib", type=int, default=16, help="calibration sequences (default 16)")
    g.add_argument("--checkpoint", default=None, help="the FP32 checkpoint (default: shipped)")
    g.set_defaults(func=_cmd_export_onnx)


def _cmd_export_tflite(args) -> int:
    from tinyquant.export.tflite import calibrate_block, export_tflite
    from tinyquant.llm.checkpoint import load_checkpoint
    from tinyquant.llm.data import calibration_samples

    params, cfg, _ = load_checkpoint(args.checkpoint)
    spec = calibrate_block(params, cfg, args.block, calibration_samples(args.calib, cfg.context))
    size = export_tflite(spec, args.out, args.tokens)
    print(f"wrote {args.out}: block {args.block}'s 7 Linears as int8 FULLY_CONNECTED "
          f"(per-channel weights, {args.tokens} tokens per call), {size / 1e6:.2f} MB")  # fmt: skip
    return 0


def add_tflite_command(fmt) -> None:
    """``export tflite``: one block's Linears as an integer-only TFLite flatbuffer."""
    g = fmt.add_parser("tflite", help="one block's Linears as int8 FULLY_CONNECTED (LiteRT)")
    g.add_argument("--block", type=int, default=0, help="which transformer block (default 0)")
    g.add_argument("--tokens", type=int, default=64, help="rows per call (fixed input shape)")
    g.add_argument("--out", required=True, help="the .tflite file to write")
    g.add_argument("--calib", type=int, default=16, help="representative sequences (default 16)")
    g.add_argument("--checkpoint", default=None, help="the FP32 checkpoint (default: shipped)")
    g.set_defaults(func=_cmd_export_tflite)
