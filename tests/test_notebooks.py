"""Every notebook runs top to bottom in a fresh kernel without an error, and the recipes it
reports equal the committed compare run.

``TINYQUANT_WRITE_NOTEBOOKS=1 pytest tests/test_notebooks.py`` also writes the fresh outputs
back into the notebooks (the one command that regenerates them all).
"""

import os
import time
from pathlib import Path

import pytest
from test_notebook_numbers import check_notebook

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_error_in_a_fresh_kernel(path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    print(f"{path.name}: {time.perf_counter() - t0:.0f} s")  # budget: 3 min each (not asserted)
    check_notebook(nb)  # every recipe it printed equals the committed compare run's row
    if os.environ.get("TINYQUANT_WRITE_NOTEBOOKS") == "1":
        nbformat.write(nb, path)
