"""The README tells the truth: its table is the committed compare run, its links and commands exist."""

import json
import re
from pathlib import Path

from tinyquant.compare import ALL_SCHEMES, format_table

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
FIGURES = ROOT / "notebooks" / "figures"


def test_readme_results_table_is_exactly_the_committed_compare_run():
    rows = json.loads((FIGURES / "compare.json").read_text())
    assert format_table(rows) in README
    assert [r["scheme"] for r in rows] == list(ALL_SCHEMES), "re-run compare --all after a change"


def test_readme_links_every_notebook_and_every_link_resolves():
    linked = set(re.findall(r"\]\((notebooks/[^)]+)\)", README))
    on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert on_disk <= linked
    assert all((ROOT / link).exists() for link in linked), linked


def test_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]" && python -m pytest' in README
    assert 'pip install --quiet -e ".[dev]"' in ci and "python -m pytest" in ci


def test_readme_decode_table_is_exactly_the_committed_decode_run():
    from tinyquant.bench.decode import format_decode_table

    rows = json.loads((FIGURES / "decode_bench.json").read_text())
    assert format_decode_table(rows) in README
