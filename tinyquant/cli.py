"""The ``tinyquant`` command: train | eval | generate | quantize | qat | compare | mixed | bench.

Each sub-command is a thin argparse front over a library function; heavy imports happen inside
the handlers so that ``tinyquant --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys

from tinyquant.export.cli import add_export_commands


def _cmd_bench(args: argparse.Namespace) -> int:
    from tinyquant.bench import run_suites

    llama_cpp = False if args.no_llama_cpp else None  # None: the suite's default (on)
    rows = run_suites(args.suite, quick=args.quick, shape=args.shape, threads=args.threads,
                      formats=args.formats, llama_cpp=llama_cpp)  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


def _positive(kind=int):
    """An argparse type: a number > 0 (the error names the value and what to give)."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not v > 0 or v != v or v == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
        return v

    return parse


def _cmd_compare(args: argparse.Namespace) -> int:
    import dataclasses

    from tinyquant.api import load_recipe
    from tinyquant.compare import (
        ALL_SCHEMES,
        CompareConfig,
        format_table,
        plot_results,
        run_compare,
        to_json,
    )
    from tinyquant.evaluate import EvalSample

    if args.schemes is not None:
        schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
        if not schemes:
            raise ValueError("--schemes is empty; name presets such as w4-rtn,w4-gptq")
    else:
        schemes = list(ALL_SCHEMES) if args.all else None
    if args.recipe:
        schemes = (schemes or []) + [load_recipe(p) for p in args.recipe]
    config = CompareConfig.quick() if args.quick else CompareConfig()
    if args.full or args.windows is not None:
        sample = EvalSample.full() if args.full else EvalSample(n_windows=args.windows)
        config = dataclasses.replace(config, sample=sample)
    rows = run_compare(schemes, config, args.checkpoint)  # progress bar on stderr
    print(to_json(rows) if args.json else format_table(rows))
    if args.plot:
        out = plot_results(rows, args.plot)
        print(f"plot written to {out}", file=sys.stderr)
    return 0


def _cmd_mixed(args: argparse.Namespace) -> int:
    from pathlib import Path

    import tinyquant as tq
    from tinyquant.allocate import allocate, to_recipe
    from tinyquant.llm.checkpoint import load_checkpoint
    from tinyquant.sensitivity import Sweep, SweepConfig, sweep_cached

    params, cfg, _ = load_checkpoint(args.checkpoint)
    sc = SweepConfig()
    # 1) the sensitivity sweep, or its cached result (progress bar on stderr)
    sens, cached = sweep_cached(params, cfg, sc, args.sweep_json, progress=True)
    print(f"sensitivity sweep: {len(sens.layers)} layers × {len(sens.schemes)} schemes, "
          + ("read from the cache" if cached else f"measured in {sens.seconds:.0f} s"),
          file=sys.stderr)  # fmt: skip
    # 2) the allocation, written as a recipe
    a = allocate(sens, args.budget, args.proxy, args.solver)
    recipe = to_recipe(a, args.name)
    Path(args.out).write_text(recipe.to_json() + "\n")
    # 3) the table: the scheme of each layer, then predicted against measured
    print(f"| layer | scheme | bits/weight | ΔKL alone ({sc.kl_windows} calibration windows) |")
    print("|---|---|--:|--:|")
    for li, (layer, scheme) in enumerate(zip(a.layers, a.schemes, strict=True)):
        si = sens.schemes.index(scheme)
        bpw = sens.bits[li, si] / sens.n_weights[li]
        print(f"| {layer.removesuffix('.weight')} | {scheme} | {bpw:.3f} | {sens.kl[li, si]:.6f} |")
    together = Sweep(params, cfg, sc).measure_together(dict(zip(a.layers, a.schemes, strict=True)))
    print(f"{recipe.name}: {a.bits_per_weight:.4f} bits per weight (budget {a.budget:g}), "
          f"{args.solver} on the {args.proxy} proxy")  # fmt: skip
    ratio = a.predicted_kl / together if together > 0 else float("nan")
    print(f"ΔKL on the calibration windows: predicted (Σ single-layer) {a.predicted_kl:.5f} · "
          f"measured (the same weights together) {together:.5f} · predicted/measured "
          f"{ratio:.2f}")  # fmt: skip
    if args.evaluate:  # the recipe as `quantize` builds it, on the one evaluator
        q = tq.quantize(tq.load(args.checkpoint), recipe)
        print(tq.evaluate(q, tq.load(args.checkpoint)).summary(recipe.name))
    print(f"recipe written to {args.out}", file=sys.stderr)
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    import tinyquant as tq

    model = tq.load(args.checkpoint)
    q = tq.quantize(model, args.recipe)
    q.save(args.out)
    print(f"{q.recipe.name}: {q.bits_per_weight:.3f} bits per weight, {q.nbytes / 1e6:.2f} MB "
          f"→ {args.out}")  # fmt: skip
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


def _cmd_qat(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    import tinyquant as tq
    from tinyquant.evaluate import Evaluator, paired_difference
    from tinyquant.llm.checkpoint import check_output_path, save_checkpoint
    from tinyquant.qat import QATConfig, convert, qat_scheme, train_qat

    qat_scheme(args.recipe)  # an unknown recipe or a grid-less format fails before any work
    qc = QATConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                   scale_lr=args.scale_lr, warmup=args.warmup, distill=args.distill,
                   learn_scale=not args.frozen_grid, seed=args.seed,
                   eval_every=args.eval_every)  # fmt: skip
    out = check_output_path(args.out)
    base = tq.load(args.checkpoint)
    if base.recipe.rules:
        raise ValueError(f"{args.checkpoint} is quantized ({base.recipe.name}); QAT starts from "
                         "an FP32 checkpoint")  # fmt: skip
    control = None
    if args.control:
        control = tq.load(args.control)
        if control.cfg != base.cfg:
            raise ValueError(f"the control {args.control} has another config than the base "
                             "model; train it from the same checkpoint")  # fmt: skip
    latent, st, meta = train_qat(base.params, base.cfg, args.recipe, qc)
    name = "fp32-control" if st.weights is None else f"qat-{args.recipe}"
    model = convert(latent, base.cfg, st, base.params, name, qc, base.base_sha256)
    meta["command"] = "tinyquant " + " ".join(shlex.quote(a) for a in (args.argv or []))
    if st.weights is None:
        save_checkpoint(out, model.params, model.cfg, meta)
    else:
        model.save(out)
    ev = Evaluator(base.params, base.cfg)
    r = ev.evaluate(model.params)
    meta["eval_vs_fp32"] = r.as_dict()
    line = f"{name}: {model.bits_per_weight:.3f} bits/weight · vs FP32 {r.summary('')[2:]}"
    if control is not None:
        d = paired_difference(r, ev.evaluate(control.params))
        meta["vs_control"] = {"ppl_ratio_pct": d.ppl_ratio_pct,
                              "ppl_ratio_ci95": list(d.ppl_ratio_ci95)}  # fmt: skip
        lo, hi = d.ppl_ratio_ci95
        line += f" · vs control {d.ppl_ratio_pct:+.2f}% [{lo:+.2f}, {hi:+.2f}]"
    Path(str(out) + ".json").write_text(json.dumps(meta, indent=1))
    print(line)
    print(f"saved {out} (curve: {out}.json)")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import tinyquant as tq
    from tinyquant.llm.data import val_bytes
    from tinyquant.llm.nll import eval_loss

    model = tq.load(args.checkpoint)
    r = eval_loss(model.params, model.cfg, val_bytes(), max_bytes=args.max_bytes)
    if model.recipe.rules:  # a quantized model: the one evaluator against its FP32 base
        ev = tq.evaluate(model)
        r |= {"recipe": model.recipe.name, "bits_per_weight": model.bits_per_weight} | {
            k: v for k, v in ev.as_dict().items() if k != "perplexity"}  # fmt: skip
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"validation loss {r['val_loss']:.4f} nats/byte · perplexity {r['perplexity']:.3f} · "
          f"{r['bits_per_byte']:.4f} bits/byte · {r['tokens']} bytes")  # fmt: skip
    if "recipe" in r:
        lo, hi = r["delta_ppl_ci95"]
        print(
            f"{r['recipe']} vs FP32 on the evaluation sample: Δppl {r['delta_ppl_pct']:+.2f}% "
            f"[{lo:+.2f}, {hi:+.2f}] · KL {r['kl']:.5f} · top-1 {100 * r['top1']:.2f}%"
        )
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import tinyquant as tq

    model = tq.load(args.checkpoint)
    make_cache = None
    if args.kv:
        from tinyquant.kv_quant import kv_cache

        dtype = model.params["token_embd.weight"].dtype
        factory = kv_cache(args.kv, model.cfg, dtype)
        make_cache = lambda: factory(1)  # noqa: E731
    text = model.generate(args.prompt, args.n, temperature=args.temperature, top_k=args.top_k,
                          seed=args.seed, make_cache=make_cache)  # fmt: skip
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
    p.add_argument("--checkpoint", default=None,
                   help="a model or quantized checkpoint (default: the shipped model)")  # fmt: skip
    p.add_argument("--max-bytes", type=_positive(), default=None, help="evaluate only this prefix")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "generate",
        help="sample text from the model",
        description="Continue a prompt byte by byte (KV-cache decoding).",
    )
    p.add_argument("prompt", nargs="?", default="ROMEO:\n", help="text to continue")
    p.add_argument("-n", type=_positive(), default=400, help="bytes to generate (default 400)")
    p.add_argument(
        "--temperature", type=_positive(float), default=0.8, help="> 0; lower is greedier"
    )
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest bytes")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--checkpoint", default=None, help="safetensors file (default: shipped model)")
    p.add_argument("--kv", default=None,
                   help="quantized KV cache, e.g. int8, int4, int2-prerope, fp8-r0, "
                   "int4-ktoken (see tinyquant.kv_quant)")  # fmt: skip
    p.set_defaults(func=_cmd_generate)


class _Parser(argparse.ArgumentParser):
    """argparse, with bad arguments reported on one line (and exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tinyquant",
        description="LLM quantization from scratch in NumPy, on a tiny Shakespeare model.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    from tinyquant.presets import PRESETS  # light: no kernels compiled at import

    p = sub.add_parser(
        "compare",
        help="quantize the shipped model every way; size, Δppl, KL, top-1 with intervals, speed",
        description="Quantize the model with every preset (or --schemes / --recipe) and score "
        "each with the one evaluator on the same validation windows. Presets: "
        + ", ".join(PRESETS),
    )
    p.add_argument("--schemes", help="comma-separated presets (default: the curated set)")
    p.add_argument("--all", action="store_true",
                   help="every preset and every llama.cpp type (gguf-TYPE[-imatrix])")  # fmt: skip
    p.add_argument("--recipe", action="append", help="a recipe JSON file (repeatable)")
    p.add_argument("--quick", action="store_true", help="few windows and calibration windows")
    p.add_argument("--full", action="store_true", help="score every validation window")
    p.add_argument("--windows", type=_positive(), help="evaluation windows (default 256)")
    p.add_argument("--json", action="store_true", help="print one JSON list of rows")
    p.add_argument("--plot", default="compare.png", help="PNG path ('' for none)")
    p.add_argument("--checkpoint", help="a .safetensors checkpoint (default: the shipped one)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "quantize",
        help="quantize a model by a recipe and save the quantized checkpoint",
        description="Apply a preset (or a recipe JSON file) and write packed codes, scales, "
        "zeros, rotation seeds and the recipe to a safetensors file.",
    )
    p.add_argument("--recipe", required=True, help="a preset name or a recipe .json file")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--checkpoint", help="the FP32 checkpoint (default: the shipped one)")
    p.set_defaults(func=_cmd_quantize)

    p = sub.add_parser(
        "mixed",
        help="mixed precision: per-layer sensitivity, then one scheme per layer under a budget",
        description="Measure what quantizing each block Linear alone costs (ΔKL on calibration "
        "text, and the hessian / fisher proxies) for every candidate scheme, then choose one "
        "scheme per layer minimising the predicted cost under --budget bits per weight (exact "
        "dynamic programming, or greedy). The sweep is cached: a second budget re-uses it.",
    )
    p.add_argument("--budget", type=_positive(float), required=True,
                   help="bits per weight of the block Linears, scales and zeros in")  # fmt: skip
    p.add_argument("--proxy", choices=["kl", "hessian", "fisher", "sqnr"], default="kl",
                   help="the per-layer cost to minimise (default: the measured ΔKL)")  # fmt: skip
    p.add_argument("--solver", choices=["dp", "greedy"], default="dp",
                   help="exact knapsack (dp) or the marginal-gain heuristic")  # fmt: skip
    p.add_argument("--out", required=True, help="the recipe .json file to write")
    p.add_argument("--name", help="the recipe's name (default: mixed-<budget>)")
    p.add_argument("--sweep-json", help="where the sweep is cached (default: ~/.cache/tinyquant)")
    p.add_argument("--evaluate", action="store_true",
                   help="also quantize by the recipe and score it (the evaluator)")  # fmt: skip
    p.add_argument("--checkpoint", help="a .safetensors checkpoint (default: the shipped one)")
    p.set_defaults(func=_cmd_mixed)

    p = sub.add_parser(
        "qat",
        help="quantization-aware training: prepare → train → convert, saved as a quantized model",
        description="Fine-tune the FP32 model with fake-quantized block Linears (straight-through "
        "gradients, LSQ step sizes; BitNet absmean for ternary), then convert to the quantized "
        "Linears PTQ produces. Recipes: fp32 (the FP32 control, same loop), w4-g128, w3, "
        "w3-g128, w2-g64, ternary, or an integer preset such as w4-rtn-g128.",
    )
    p.add_argument("--recipe", required=True, help="the grid to train (fp32: the control)")
    p.add_argument("--steps", type=_positive(), required=True, help="optimizer steps")
    p.add_argument("--batch-size", type=_positive(), default=8, help="sequences per step (8)")
    p.add_argument("--lr", type=_positive(float), default=2e-4, help="weights' peak lr (2e-4)")
    p.add_argument("--scale-lr", type=_positive(float), default=2e-3,
                   help="peak lr of log step sizes (2e-3)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=10, help="linear warmup steps (10)")
    p.add_argument("--distill", action="store_true", help="KL to the FP32 model's logits")
    p.add_argument("--frozen-grid", action="store_true", help="keep the RTN grid (no LSQ)")
    p.add_argument("--seed", type=int, default=0, help="batch sampler seed (0)")
    p.add_argument("--eval-every", type=int, default=50, help="steps between validation checks")
    p.add_argument("--control", help="an FP32 control checkpoint: also report Δ against it")
    p.add_argument("--checkpoint", help="the FP32 checkpoint to start from (default: shipped)")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.set_defaults(func=_cmd_qat)

    p = sub.add_parser(
        "bench",
        help="speed benchmarks, each a ratio against a baseline measured in the same run",
        description="Run benchmark suites. Rows print to stderr as they finish; --json prints "
        "one JSON document on stdout.",
    )
    p.add_argument(
        "suite",
        nargs="*",
        default=[],
        help="suites: train, kernels, export (the default), decode (only when named)",
    )
    p.add_argument("--shape", default=None, help="decode: tinyllama-1.1b (default), small or quick")
    p.add_argument(
        "--threads",
        type=_positive(int),
        default=None,
        help="decode: threads for tinyquant and llama.cpp; kernels: Numba threads (default: all)",
    )
    p.add_argument(
        "--formats",
        default=None,
        help="decode: comma-separated formats beside fp32 (default: all; see bench/decode.py)",
    )
    p.add_argument("--no-llama-cpp", action="store_true", help="decode: skip llama.cpp's rows")
    p.add_argument("--json", action="store_true", help="print one JSON list of rows at the end")
    p.add_argument("--quick", action="store_true", help="small shapes, few repeats (smoke test)")
    p.set_defaults(func=_cmd_bench)
    _add_llm_commands(sub)
    from tinyquant.memory import add_memory_command  # light: numpy and the format table

    add_memory_command(sub)
    from tinyquant.kv_study import add_kv_command

    add_kv_command(sub)
    from tinyquant.calibration_study import add_calibration_command

    add_calibration_command(sub)
    add_export_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a bad argument (2, one line already printed)
        return int(stop.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"tinyquant {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
