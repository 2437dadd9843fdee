"""`tinyquant bench SUITE --json` prints exactly one JSON document on stdout (rows go to stderr)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("suite", ["train", "export", "decode"])
def test_bench_json_stdout_is_one_json_document_for_every_suite(suite):
    out = subprocess.run(
        [sys.executable, "-m", "tinyquant.cli", "bench", suite, "--quick", "--json"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    rows = json.loads(out.stdout)  # fails if any human-readable row reached stdout
    assert rows and all(r["seconds"] > 0 and r["baseline_seconds"] > 0 for r in rows)
    assert out.stderr.strip(), "the human-readable rows should be on stderr"


def test_decode_bench_rows_carry_bytes_per_token_and_the_roofline_share():
    out = subprocess.run(
        [sys.executable, "-m", "tinyquant.cli", "bench", "decode", "--quick", "--json"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    rows = [r for r in json.loads(out.stdout) if r["name"].startswith("decode ")]
    fmts = {r["name"] for r in rows}
    assert {"decode fp32", "decode w8a8", "decode w4a16-g128", "decode w2a16-g64"} <= fmts
    by = {(r["name"], r["context"]): r for r in rows}
    fp, w4 = by["decode fp32", 16], by["decode w4a16-g128", 16]
    # 4-bit g128 codes + scales + zeros stream ~ 4.25/32 of FP32's weight bytes (norms aside)
    assert 0.12 < w4["weight_bytes"] / fp["weight_bytes"] < 0.15
    for r in rows:
        assert r["roofline_pct"] == pytest.approx(100 * r["gbps"] / r["bandwidth_gbps"])
        assert r["bytes_per_token"] > r["weight_bytes"]  # the KV cache read is counted too
