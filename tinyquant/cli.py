"""The ``tinyquant`` command: train | eval | generate | bench | compare.

Each sub-command is a thin argparse front over a library function; heavy imports happen inside
the handlers so that ``tinyquant --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_bench(args: argparse.Namespace) -> int:
    from tinyquant.bench import run_suites

    rows = run_suites(args.suite, quick=args.quick)
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import dataclasses

    from tinyquant.compare import CompareConfig, format_table, plot_results, run_compare, to_json

    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()] if args.schemes else None
    config = CompareConfig.quick() if args.quick else CompareConfig()
    if args.eval_bytes is not None:
        config = dataclasses.replace(config, eval_bytes=args.eval_bytes)
    rows = run_compare(schemes, config, args.checkpoint)  # progress bar on stderr
    if args.json:
        print(to_json(rows))
    else:
        print(format_table(rows))
    if args.plot:
        out = plot_results(rows, args.plot)
        print(f"plot written to {out}", file=sys.stderr)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import os
    import shlex

    from tinyquant.llm.model import Config
    from tinyquant.llm.train import TrainConfig, train

    cfg = Config.tiny() if args.preset == "tiny" else Config()
    tc = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        min_lr=args.lr / 10 if args.min_lr is None else args.min_lr,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        clip=args.clip,
        seed=args.seed,
        eval_every=args.eval_every,
        eval_bytes=args.eval_bytes,
    )
    command = "tinyquant " + " ".join(shlex.quote(a) for a in (args.argv or []))
    out = os.fspath(args.out)
    train(cfg, tc, out=out, command=command.strip())
    print(f"saved {out}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from tinyquant.llm.checkpoint import load_checkpoint
    from tinyquant.llm.data import val_bytes
    from tinyquant.metrics import eval_loss

    params, cfg, _ = load_checkpoint(args.checkpoint)
    r = eval_loss(params, cfg, val_bytes(), max_bytes=args.max_bytes)
    if args.json:
        print(json.dumps(r))
    else:
        print(
            f"validation loss {r['val_loss']:.4f} nats/byte · perplexity {r['perplexity']:.3f} · "
            f"{r['bits_per_byte']:.4f} bits/byte · {r['tokens']} bytes"
        )
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from tinyquant.llm.checkpoint import load_checkpoint
    from tinyquant.llm.model import generate

    params, cfg, _ = load_checkpoint(args.checkpoint)
    text = generate(
        params,
        cfg,
        args.prompt,
        args.n,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
    )
    print(args.prompt + text)
    return 0


def _add_llm_commands(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the tiny transformer on Shakespeare and save a checkpoint",
        description="Train from scratch (fixed seed) and save a safetensors checkpoint; "
        "a progress bar shows loss and tokens/s, validation loss is checked periodically.",
    )
    p.add_argument("--preset", choices=["default", "tiny"], default="default", help="model size")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step (default 16)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    p.add_argument("--min-lr", type=float, default=None, help="final learning rate (lr / 10)")
    p.add_argument("--warmup", type=int, default=100, help="linear warmup steps (default 100)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decay (default 0.1)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--eval-every", type=int, default=250, help="steps between val checks")
    p.add_argument("--eval-bytes", type=int, default=32768, help="val prefix for quick checks")
    p.add_argument("--out", default="shakespeare.safetensors", help="checkpoint path to write")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "eval",
        help="validation loss, perplexity and bits per byte on the held-out plays",
        description="Evaluate a checkpoint (the shipped one by default) on the validation plays.",
    )
    p.add_argument("--checkpoint", default=None, help="safetensors file (default: shipped model)")
    p.add_argument("--max-bytes", type=int, default=None, help="evaluate only this prefix")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "generate",
        help="sample text from the model",
        description="Continue a prompt byte by byte (KV-cache decoding).",
    )
    p.add_argument("prompt", nargs="?", default="ROMEO:\n", help="text to continue")
    p.add_argument("-n", type=int, default=400, help="bytes to generate (default 400)")
    p.add_argument("--temperature", type=float, default=0.8, help="> 0; lower is greedier")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest bytes")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--checkpoint", default=None, help="safetensors file (default: shipped model)")
    p.set_defaults(func=_cmd_generate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyquant",
        description="LLM quantization from scratch in NumPy, on a tiny Shakespeare model.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    from tinyquant.recipes import PRESETS  # light: no kernels compiled at import

    p = sub.add_parser(
        "compare",
        help="quantize the shipped model every way; size, perplexity, KL, top-1, speed",
        description="Quantize the model with every preset (or --schemes) and compare them on "
        "the same validation bytes. Presets: " + ", ".join(PRESETS),
    )
    p.add_argument("--schemes", help="comma-separated presets (default: all)")
    p.add_argument("--quick", action="store_true", help="few eval bytes and calibration windows")
    p.add_argument("--eval-bytes", type=int, help="validation bytes scored per scheme")
    p.add_argument("--json", action="store_true", help="print one JSON list of rows")
    p.add_argument("--plot", default="compare.png", help="PNG path ('' for none)")
    p.add_argument("--checkpoint", help="a .safetensors checkpoint (default: the shipped one)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "bench",
        help="speed benchmarks, each a ratio against a baseline measured in the same run",
        description="Run benchmark suites (all by default). Rows print as they finish.",
    )
    p.add_argument("suite", nargs="*", default=[], help="suites to run: train, kernels")
    p.add_argument("--json", action="store_true", help="print one JSON list of rows at the end")
    p.add_argument("--quick", action="store_true", help="small shapes, few repeats (smoke test)")
    p.set_defaults(func=_cmd_bench)
    _add_llm_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"tinyquant {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
