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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyquant",
        description="LLM quantization from scratch in NumPy, on a tiny Shakespeare model.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "bench",
        help="speed benchmarks, each a ratio against a baseline measured in the same run",
        description="Run benchmark suites (all by default). Rows print as they finish.",
    )
    p.add_argument("suite", nargs="*", default=[], help="suites to run: train, kernels")
    p.add_argument("--json", action="store_true", help="print one JSON list of rows at the end")
    p.add_argument("--quick", action="store_true", help="small shapes, few repeats (smoke test)")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"tinyquant {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
