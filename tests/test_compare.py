"""``tinyquant compare``: every scheme quantizes the shipped model and reports finite numbers."""

import json
import math

import pytest

from tinyquant.cli import main
from tinyquant.compare import DEFAULT_SCHEMES, format_table, pareto_front

KEYS = ("scheme", "bits_per_weight", "bytes", "perplexity", "delta_ppl_pct", "kl", "kl_p99",
        "top1", "tokens_per_s")  # fmt: skip


@pytest.mark.slow
def test_compare_quick_json_runs_every_preset_with_finite_numbers(capsys, tmp_path):
    assert main(["compare", "--quick", "--json", "--plot", str(tmp_path / "c.png")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["scheme"] for r in rows] == list(DEFAULT_SCHEMES)
    for r in rows:
        assert all(k in r for k in KEYS), r
        for k in KEYS[1:]:
            assert math.isfinite(r[k]), (r["scheme"], k, r[k])
        assert 0.0 <= r["top1"] <= 1.0 and r["kl"] >= 0.0
        for point, ci in (("delta_ppl_pct", "delta_ppl_ci95"), ("kl", "kl_ci95")):
            lo, hi = r[ci]
            assert math.isfinite(lo) and math.isfinite(hi) and lo <= r[point] <= hi, (r, ci)
    by = {r["scheme"]: r for r in rows}
    assert by["fp32"]["delta_ppl_pct"] == 0.0 and by["fp32"]["kl"] == 0.0
    assert by["fp32"]["delta_ppl_ci95"] == [0.0, 0.0] and by["fp32"]["kl_ci95"] == [0.0, 0.0]
    assert by["fp32"]["top1"] == 1.0 and by["fp32"]["bits_per_weight"] == 32.0
    assert by["w2-rtn"]["bits_per_weight"] < by["w4-rtn"]["bits_per_weight"] < 8
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_compare_table_has_a_row_per_scheme_and_the_frontier_is_sorted_by_size():
    ci = {"delta_ppl_ci95": [-0.1, 1.2], "kl_ci95": [0.005, 0.02], "kl_p99": 0.1}
    rows = [
        {"scheme": "a", "bits_per_weight": 4.0, "bytes": 1e6, "perplexity": 4.5,
         "delta_ppl_pct": 1.0, "kl": 0.01, "top1": 0.9, "tokens_per_s": 100.0, "path": "int"} | ci,
        {"scheme": "b", "bits_per_weight": 2.0, "bytes": 5e5, "perplexity": 4.4,
         "delta_ppl_pct": 0.5, "kl": 0.02, "top1": 0.8, "tokens_per_s": 90.0, "path": "int"} | ci,
    ]  # fmt: skip
    table = format_table(rows)
    assert table.count("\n") == 3 and "| a |" in table and "| b |" in table
    assert "+1.00 [-0.10, +1.20] ≈0" in table  # an interval containing 0 prints as such
    assert pareto_front(rows) == ["b"]  # b is smaller and better: a is dominated


def test_compare_rejects_an_unknown_scheme_with_the_list_of_presets(capsys):
    assert main(["compare", "--schemes", "w5-magic", "--quick"]) == 2
    assert "w4-gptq" in capsys.readouterr().err


def test_compare_rejects_an_empty_scheme_list(capsys):
    assert main(["compare", "--schemes", ",", "--quick"]) == 2
    assert "empty" in capsys.readouterr().err


def test_compare_rejects_a_non_positive_window_count(capsys):
    assert main(["compare", "--windows", "-5"]) == 2
    err = capsys.readouterr().err
    assert "must be" in err and err.count("\n") == 1


def test_gguf_rows_count_bits_from_the_files_tensors_and_score_the_files_weights():
    gguf = pytest.importorskip("gguf")
    from tinyquant.compare import CompareConfig, run_compare
    from tinyquant.llm.checkpoint import load_checkpoint

    rows = run_compare(["gguf-Q4_0", "gguf-Q4_0-imatrix"], CompareConfig.quick(), progress=False)
    plain, weighted = rows
    params, _cfg, _ = load_checkpoint()
    # independently: every 2-D tensor at its type's block size (Q4_0 18 B / 32, output Q6_K)
    sizes = {"Q4_0": (32, 18), "Q6_K": (256, 210)}
    assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q6_K] == sizes["Q6_K"]
    bits = n = 0
    for name, v in params.items():
        if v.ndim == 2:
            block, nbytes = sizes["Q6_K" if name == "output.weight" else "Q4_0"]
            bits, n = bits + 8 * nbytes * v.size // block, n + v.size
    assert plain["bits_per_weight"] == bits / n == weighted["bits_per_weight"]
    assert plain["gguf_types"] == {"Q4_0": 29, "Q6_K": 1, "F32": 9}
    assert plain["kl"] > 0 and weighted["kl"] != plain["kl"]  # the imatrix changes the codes
    assert plain["scheme"] == "gguf-Q4_0" and weighted["scheme"] == "gguf-Q4_0-imatrix"


def test_compare_rejects_an_unknown_gguf_type_with_the_types_it_writes(capsys):
    assert main(["compare", "--schemes", "gguf-Q7_K", "--quick"]) == 2
    assert "Q4_K_M" in capsys.readouterr().err
