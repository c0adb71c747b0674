"""notebooks/quickstart.ipynb runs from top to bottom and produces its scores, UMAP and marker genes.

nbformat/nbclient/ipykernel are not among the pinned requirements, so the notebook's code cells are
run in order as one Python script in a subprocess (what a kernel would run; the notebook uses no
IPython magics). It trains for real on the embedded PBMC 68k data, hence the slow marker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["language"] == "python"
    cells = nb["cells"]
    assert all(c["cell_type"] in ("markdown", "code") and "id" in c for c in cells)
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert not any(line.lstrip().startswith(("%", "!")) for cell in code for line in cell.splitlines()), "IPython magics"
    return code


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path, data_dir):
    script = tmp_path / "quickstart.py"
    script.write_text("\n\n".join(code_cells(NOTEBOOK)) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCRCL_DATA_DIR": str(data_dir), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "quickstart_output"
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores) == {"acc", "nmi", "ari", "f1"}
    assert f"ARI {scores['ari']:.4f}" in proc.stdout
    assert scores["ari"] > 0.2 and scores["nmi"] > 0.3, scores  # far above chance (0) on the 10 FACS populations
    for png in ("umap.png", "markers_dotplot.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markers = pd.read_csv(out / "markers.csv", dtype={"cluster": str})
    import scanpy as sc

    genes = set(sc.datasets.pbmc68k_reduced().raw.var_names)
    assert set(markers["gene"]) <= genes and markers["cluster"].nunique() >= 8
