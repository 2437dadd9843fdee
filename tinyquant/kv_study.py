"""KV-cache quantization measured on the model: Δppl, KL and top-1 against cache bits, the
layout choices (keys per channel vs per token, residual, pre vs post RoPE, group size), bytes
per cached token, the keys' outlier channels — ``tinyquant kv`` writes it all as one JSON.

    bytes per token = Σ_layers Σ_{K,V} (codes + scales + zeros of one token's vectors)
    FP16 baseline   = 2 · layers · heads · hd · 2 bytes                   (4096 B here)

Every figure comes from the one evaluator (``Evaluator.evaluate(kv_cache=)``), scored in one
forward call per window through ``kv_quant.QuantKVCache`` — equal to token-by-token decoding
(tests/test_kv_quant.py), and measured against it here on a few windows (``incremental``).
Bytes are counted from the stored blocks of a cache that has held one full window.

Refs: Liu et al. 2024 "KIVI" (keys per channel, values per token, residual); Hooper et al. 2024
"KVQuant" §3.1–3.2 (pre-RoPE per-channel keys, outlier channels).
Shape legend: B windows per batch, H heads, T tokens, hd head dim, L layers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from tinyquant.evaluate import EvalSample, Evaluator, paired_difference
from tinyquant.kv_quant import QuantKVCache, kv_cache, parse_kv
from tinyquant.llm.data import val_bytes
from tinyquant.llm.model import KVCache, apply_rope, forward, new_cache

__all__ = ["SWEEP", "COMPARISONS", "cache_bytes", "record_kv", "key_outliers", "incremental_check",
           "run_kv_study", "plot_kv", "add_kv_command"]  # fmt: skip

# the spec names measured, by the question each answers (KIVI's layout is the default spec)
SWEEP = {
    "KIVI layout (keys per channel, values per token, G 32, R 32)": ["fp8", "int8", "int4", "int2"],
    "naive: everything per token, no residual": ["fp8-ktoken-r0", "int8-ktoken-r0",
                                                  "int4-ktoken-r0", "int2-ktoken-r0"],
    "keys per token, residual 32": ["int4-ktoken", "int2-ktoken"],
    "residual": ["int4-r0", "int2-r0", "int2-r128"],
    "keys before RoPE (KVQuant)": ["int4-prerope", "int2-prerope", "int2-r0-prerope",
                                   "int2-ktoken-prerope"],
    "group size": ["int2-g16", "int2-g64"],
}  # fmt: skip
# (a, b): paired Δ of a against b — one layout choice changed at a time
COMPARISONS = [("int4", "int4-ktoken"), ("int2", "int2-ktoken"), ("int4-r0", "int4-ktoken-r0"),
               ("int2-r0", "int2-ktoken-r0"), ("int2", "int2-r0"), ("int2-r128", "int2"),
               ("int4-prerope", "int4"), ("int2-prerope", "int2"),
               ("int2-ktoken-prerope", "int2-ktoken"), ("int2-g16", "int2")]  # fmt: skip


def cache_bytes(spec_name: str, params: dict, cfg, tokens: np.ndarray) -> dict:
    """Bytes of a cache that has held ``tokens`` (T,): per quantized token (codes, scales,
    zeros of K and V in every layer), and in all with the residual kept in FP16.

    >>> from tinyquant.llm.model import Config, init_params
    >>> cfg = Config(d_model=128, n_layers=1, n_heads=2, d_ff=64, context=64)
    >>> b = cache_bytes("int4-ktoken-r0", init_params(cfg), cfg, np.arange(64))
    >>> b["bytes_per_token"], b["fp16_bytes_per_token"]      # 2 · 2 heads · (32 + 2·3) B
    (152.0, 512)
    """
    cache = QuantKVCache(parse_kv(spec_name), cfg, 1, params["token_embd.weight"].dtype)
    forward(params, tokens, cfg, cache=cache)
    per_token = 0.0
    for layer in cache.layers:
        for st in layer.values():
            if st.n_q:
                per_token += sum(b.nbytes for b in st.blocks) / st.n_q
    fp16 = 2 * cfg.n_layers * cfg.n_heads * cfg.head_dim * 2
    return {"bytes_per_token": per_token, "fp16_bytes_per_token": fp16,
            "bits_per_element": 8 * per_token / (fp16 / 2), "tokens": int(len(tokens)),
            "cache_bytes": cache.nbytes(), "fp16_cache_bytes": fp16 * int(len(tokens)),
            "quantized_tokens": list(cache.n_quantized())}  # fmt: skip


class _KeyRecorder(KVCache):
    """A full-precision cache that keeps a copy of every layer's keys before and after RoPE."""

    seen: dict

    def attend(self, i, q, k, v, cos, sin):
        self.seen[i] = (k.copy(), apply_rope(k, cos, sin), v.copy())  # (B, H, T, hd) each
        return super().attend(i, q, k, v, cos, sin)


def record_kv(params: dict, cfg, windows: np.ndarray) -> dict[int, tuple]:
    """Every layer's keys before RoPE, after RoPE, and values on ``windows`` (B, T):
    {layer: (k_pre, k_post, v)}, each (B, H, T, hd), from a full-precision cache.

    >>> from tinyquant.llm.model import Config, init_params
    >>> cfg = Config.tiny()
    >>> [x.shape for x in record_kv(init_params(cfg), cfg, np.arange(8)[None])[1]]
    [(1, 2, 8, 16), (1, 2, 8, 16), (1, 2, 8, 16)]
    """
    rec = new_cache(cfg, len(windows), params["token_embd.weight"].dtype)
    rec = _KeyRecorder(rec.k, rec.v, 0, rec.capacity)
    rec.seen = {}
    forward(params, windows, cfg, cache=rec)
    return rec.seen


def key_outliers(params: dict, cfg, windows: np.ndarray) -> dict:
    """Per layer, the absmax over tokens of every (head, channel) of K before and after RoPE
    and of V, and how far the largest channel stands above the median one.

    >>> from tinyquant.llm.model import Config, init_params
    >>> cfg = Config.tiny()
    >>> o = key_outliers(init_params(cfg), cfg, np.arange(64).reshape(2, 32))
    >>> len(o["layers"][0]["pre_rope_absmax"]), sorted(o["layers"][0])[:2]
    (32, ['post_rope_absmax', 'post_rope_max_over_median'])
    """
    seen = record_kv(params, cfg, windows)
    layers = []
    for i in range(cfg.n_layers):
        out = {}
        for name, x in zip(("pre_rope", "post_rope", "values"), seen[i], strict=True):
            a = np.abs(x).max(axis=(0, 2)).reshape(-1)  # (H·hd,) absmax over batch and tokens
            out[name + "_absmax"] = [round(float(v), 4) for v in a]
            out[name + "_max_over_median"] = round(float(a.max() / np.median(a)), 3)
        layers.append(out)
    return {"windows": int(len(windows)), "tokens_per_window": int(windows.shape[1]),
            "layers": layers}  # fmt: skip


def incremental_check(spec_name: str, params: dict, cfg, windows: np.ndarray) -> dict:
    """Token-by-token decoding against the one-call forward on the same windows: seconds per
    window each way and the largest logit difference (float32 rounding, code flips)."""
    spec = parse_kv(spec_name)
    t0 = time.perf_counter()
    one = forward(params, windows, cfg, cache=QuantKVCache(spec, cfg, len(windows)))
    t1 = time.perf_counter()
    cache = QuantKVCache(spec, cfg, len(windows))
    steps = [forward(params, windows[:, j : j + 1], cfg, cache=cache)
             for j in range(windows.shape[1])]  # fmt: skip
    t2 = time.perf_counter()
    steps = np.concatenate(steps, axis=1)
    return {"spec": spec_name, "windows": int(len(windows)),
            "one_call_s_per_window": (t1 - t0) / len(windows),
            "token_by_token_s_per_window": (t2 - t1) / len(windows),
            "max_abs_logit_difference": float(np.abs(one - steps).max()),
            "same_argmax_share": float((one.argmax(-1) == steps.argmax(-1)).mean())}  # fmt: skip


def run_kv_study(
    specs: list[str] | None = None, sample: EvalSample | None = None, progress: bool = False
) -> dict:
    """Every spec of ``SWEEP`` (or ``specs``) on the one evaluator, with bytes, the paired
    layout comparisons, the keys' outliers and the incremental-decoding check."""
    import tinyquant as tq

    model = tq.load()
    params, cfg = model.params, model.cfg
    sample = sample or EvalSample()
    names = specs or [n for group in SWEEP.values() for n in group]
    for name in names:  # 0) every spec is valid for this model before anything runs
        QuantKVCache(parse_kv(name), cfg, 1)
    ev = Evaluator(params, cfg, sample, progress=progress)
    group_of = {n: g for g, ns in SWEEP.items() for n in ns}
    data = val_bytes()
    first = np.stack([data[s : s + n] for s, n in ev.windows[:4]]).astype(np.int64)  # (4, T)
    rows, results = [], {}
    for name in names:
        spec = parse_kv(name)
        results[name] = r = ev.evaluate(params, kv_cache=kv_cache(spec, cfg))
        rows.append({"spec": name, "group": group_of.get(name, "other"),
                     "fmt": spec.fmt, "key_axis": spec.key_axis, "group_size": spec.group_size,
                     "residual": spec.residual, "pre_rope": spec.pre_rope}
                    | r.as_dict() | cache_bytes(name, params, cfg, first[0]))  # fmt: skip
    comparisons = []
    for a, b in COMPARISONS:
        if a in results and b in results:
            d = paired_difference(results[a], results[b])
            comparisons.append({"a": a, "b": b, "ppl_ratio_pct": d.ppl_ratio_pct,
                                "ppl_ratio_ci95": list(d.ppl_ratio_ci95), "kl_diff": d.kl_diff,
                                "kl_diff_ci95": list(d.kl_diff_ci95)})  # fmt: skip
    return {
        "command": "tinyquant kv --json notebooks/figures/kv.json",
        "sample": {
            "n_windows": sample.n_windows,
            "length": sample.length,
            "n_boot": sample.n_boot,
            "seed": sample.seed,
        },  # fmt: skip
        "ref_perplexity": next(iter(results.values())).ref_perplexity if results else None,
        "rows": rows,
        "comparisons": comparisons,
        "outliers": key_outliers(params, cfg, first),
        "incremental": incremental_check("int2", params, cfg, first[:2]),
    }


def plot_kv(study: dict, path: str | Path | None = None):
    """Δppl % (95% intervals) against bits per cached element, one line per layout group."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5), dpi=110)
    for k, group in enumerate(SWEEP):
        rows = [r for r in study["rows"] if r["group"] == group]
        if not rows:
            continue
        x = [r["bits_per_element"] + (0.0 if k < 2 else 0.07 * (k - 1)) for r in rows]  # jitter
        d = np.array([r["delta_ppl_pct"] for r in rows])
        ci = np.array([r["delta_ppl_ci95"] for r in rows])
        ax.errorbar(x, d, yerr=[d - ci[:, 0], ci[:, 1] - d], fmt="o-" if k < 2 else "s",
                    capsize=3, label=group, color=f"C{k}", alpha=0.9)  # fmt: skip
        for r, xi, di in zip(rows, x, d, strict=True):
            ax.annotate(r["spec"], (xi, di), textcoords="offset points",
                        xytext=(5, -3 if k % 2 else 3), fontsize=7, ha="left")  # fmt: skip
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylim(bottom=-0.03)
    ax.set_xlabel("bits per cached element (codes + FP16 scales + zeros; residual excluded); "
                  "markers of one width are spread sideways", fontsize=8)  # fmt: skip
    ax.set_ylabel("Δ perplexity vs FP32 cache (%)")
    ax.set_title("KV-cache quantization on the Shakespeare model (one evaluator, 95% paired CI)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    if path:
        fig.savefig(path)
    return fig


def _cmd_kv(args) -> int:
    specs = [s.strip() for s in args.specs.split(",") if s.strip()] if args.specs else None
    for s in specs or []:
        parse_kv(s)  # a bad name fails before the evaluator starts
    sample = EvalSample(n_windows=args.windows) if args.windows else EvalSample()
    study = run_kv_study(specs, sample, progress=True)
    for r in study["rows"]:
        lo, hi = r["delta_ppl_ci95"]
        print(f"kv {r['spec']:>20s}  {r['bits_per_element']:5.2f} bits  "
              f"{r['bytes_per_token']:6.0f} B/token  Δppl {r['delta_ppl_pct']:+.3f}% "
              f"[{lo:+.3f}, {hi:+.3f}]  KL {r['kl']:.5f}  "
              f"top-1 {100 * r['top1']:.2f}%")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(study, indent=1) + "\n")
        print(f"written to {args.json}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        plot_kv(study, args.plot)
    return 0


def add_kv_command(sub) -> None:
    p = sub.add_parser(
        "kv",
        help="KV-cache quantization: Δppl/KL/top-1 against cache bits and layout, bytes per token",
        description="Score the shipped model with quantized KV caches (KIVI layout, per-token, "
        "residual, pre-RoPE keys, group size) on the one evaluator; bytes from the stored blocks.",
    )
    p.add_argument("--specs", help="comma-separated specs, e.g. int8,int4-ktoken,int2-prerope")
    p.add_argument("--windows", type=int, default=None, help="evaluation windows (default 256)")
    p.add_argument("--json", default=None, help="write the study as JSON to this path")
    p.add_argument("--plot", default=None, help="PNG path for the Δppl-against-bits plot")
    p.set_defaults(func=_cmd_kv)
