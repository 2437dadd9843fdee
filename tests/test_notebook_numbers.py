"""Every recipe a notebook reports is the committed compare run's row for that recipe.

Notebooks print a recipe's figures with ``EvalResult.summary`` / ``row_summary`` (one line:
``scheme: Δppl … · KL … · top-1 …``); this test finds those lines in the committed outputs and
holds each one to ``notebooks/figures/compare.json``, so a notebook and the README cannot drift
apart. (The notebook test re-executes the notebooks; the same check runs on fresh outputs there.)
"""

import json
import re
from pathlib import Path

import pytest

from tinyquant.compare import load_rows
from tinyquant.evaluate import row_summary

ROOT = Path(__file__).parent.parent
ROWS = load_rows(ROOT / "notebooks" / "figures" / "compare.json")
LINE = re.compile(r"^([\w.\-]+): Δppl [+-]\d", re.M)
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def summary_lines(nb: dict) -> list[tuple[str, str]]:
    """(scheme, line) for every summary line in a notebook's outputs."""
    out = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            text = "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
            for line in text.splitlines():
                m = LINE.match(line)
                if m:
                    out.append((m.group(1), line.strip()))
    return out


def check_notebook(nb: dict) -> int:
    lines = summary_lines(nb)
    for scheme, line in lines:
        assert scheme in ROWS, f"{scheme} is not in compare.json; add it to compare's run"
        assert line == row_summary(ROWS[scheme]), (line, row_summary(ROWS[scheme]))
    return len(lines)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_recipe_a_notebook_reports_equals_its_row_in_the_committed_compare_run(path):
    check_notebook(json.loads(path.read_text()))


def test_the_act_order_awq_and_2_bit_claims_are_among_the_checked_lines():
    seen = {s for p in NOTEBOOKS for s, _ in summary_lines(json.loads(p.read_text()))}
    assert {"w3-gptq", "w3-gptq-actorder", "w4-rtn-g128", "w4-awq", "w2-gptq-hadamard"} <= seen
