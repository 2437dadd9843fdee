"""`tinyquant bench SUITE --json` prints exactly one JSON document on stdout (rows go to stderr)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("suite", ["train", "export"])
def test_bench_json_stdout_is_one_json_document_for_every_suite(suite):
    out = subprocess.run(
        [sys.executable, "-m", "tinyquant.cli", "bench", suite, "--quick", "--json"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    rows = json.loads(out.stdout)  # fails if any human-readable row reached stdout
    assert rows and all(r["seconds"] > 0 and r["baseline_seconds"] > 0 for r in rows)
    assert out.stderr.strip(), "the human-readable rows should be on stderr"
