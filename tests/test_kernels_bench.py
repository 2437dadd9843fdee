"""`tinyquant bench kernels --quick --json` runs end to end and reports finite, positive numbers."""

import json
import math
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_quick_kernel_benchmark_prints_finite_rows_as_json():
    out = subprocess.run(
        [sys.executable, "-m", "tinyquant.cli", "bench", "kernels", "--quick", "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    rows = json.loads(out.stdout)
    names = {r["name"] for r in rows}
    assert {"gemm_fp32_blas", "gemm_int8_portable", "decode_fp32", "decode_w4a16"} <= names
    assert {"bandwidth_numpy_sum", "import_and_compile_cold", "import_and_compile_warm"} <= names
    for r in rows:
        assert {"name", "shape", "seconds", "min_seconds", "baseline", "speedup", "gbps"} <= set(r)
        assert math.isfinite(r["seconds"]) and 0 < r["min_seconds"] <= r["seconds"]
        if r["baseline"] is not None:
            assert math.isfinite(r["speedup"]) and r["speedup"] > 0
        if r["gbps"] is not None:
            assert math.isfinite(r["gbps"]) and r["gbps"] > 0
    decode_1 = [r for r in rows if r["name"].startswith("decode_") and r["shape"][0] == 1]
    assert decode_1 and all(r["gbps"] is not None for r in decode_1)
