"""Bad input through the real command line: one clear line, exit code 2, no traceback, nothing written.

Every case runs ``python train.py ... --epochs 1 --output OUT`` in a subprocess, with its own output
and cache directories, against tiny synthetic files written here. The subprocesses of the selected
cases are started together; the failures happen while the data are built, before any training, but
each still costs one Python start-up with torch, lightning and scanpy (5-10 CPU-seconds). So:

- ``test_cli``: every case through the real CLI in a subprocess. By default only ``IN_DEFAULT_RUN``
  (a name lookup, the offline download, a reader failure, a failure after the graphs are built);
  all of them with ``-m slow``.
- ``test_in_process``: every case through ``train.main`` in this process, by default: the same exit
  code, the same one line on stderr (captured at the file-descriptor level, so C-library messages
  count too), no warning shown, nothing written.

"No network" is made deterministic: the download case points ``https_proxy`` at a closed local port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "train.py"
PYTHON = ROOT / ".venv" / "bin" / "python"
if not PYTHON.exists():  # another checkout layout: the interpreter running the tests
    PYTHON = Path(sys.executable)
TIMEOUT = 240  # per subprocess: a hang (say, a download that never times out) fails instead of blocking


@dataclass
class Case:
    args: list  # after "train.py"; {d} is replaced by the inputs directory, {empty} by an empty data dir
    expect: list  # substrings of the one error line ({d}/{empty} replaced too)
    offline: bool = False  # run with a dead proxy: no download can succeed
    env: dict = field(default_factory=dict)


CASES = {
    # -- the cases of the data-layer issue (item 8)
    "unknown_dataset": Case(["--dataset", "pbmc10"], ["unknown dataset 'pbmc10'", "did you mean", "pbmc10x"]),
    "missing_file_download_fails": Case(
        ["--dataset", "lung", "--data-dir", "{empty}"],
        ["{empty}/scrna/Quake_Smart-seq2_Lung.h5", "https://zenodo.org/records/8175767/files/Quake_Smart-seq2_Lung.h5"],
        offline=True,
    ),
    "corrupt_h5ad": Case(["--data", "{d}/truncated.h5ad"], ["cannot read {d}/truncated.h5ad", "is the file complete"]),
    "unsupported_csv": Case(["--data", "{d}/expression.csv"], ["unsupported file type '.csv'", ".h5ad"]),
    "label_key_absent": Case(["--data", "{d}/good.h5ad", "--label-key", "celltype"], ["label key 'celltype' not found", "cell_type, batch"]),
    "nan_values": Case(["--data", "{d}/nan.h5ad", "--label-key", "cell_type"], ["NaN or infinite"]),
    "negative_values": Case(["--data", "{d}/negative.h5ad", "--label-key", "cell_type"], ["negative values"]),
    "all_filtered_away": Case(["--data", "{d}/zeros.h5ad", "--label-key", "cell_type"], ["nothing is left", "all zeros"]),
    "fewer_cells_than_k": Case(["--data", "{d}/ten_cells.h5ad", "--label-key", "cell_type"], ["only 10 cells", "k = 15", "--k"]),
    "n_clusters_above_cells": Case(["--data", "{d}/good.h5ad", "--label-key", "cell_type", "--k", "3", "--n-clusters", "50"], ["n_clusters = 50", "40 cells"]),
    "spatial_without_coordinates": Case(["--data", "{d}/good.h5ad", "--label-key", "cell_type", "--task", "st"], ["obsm['spatial']", "--task sc"]),
    "coordinates_under_another_key": Case(["--data", "{d}/x_spatial.h5ad", "--label-key", "cell_type", "--task", "st"],
                                          ["no coordinates in obsm['spatial'] (it has obsm['X_spatial']: copy it to obsm['spatial'])"]),
    "coordinates_in_obs_columns": Case(["--data", "{d}/obs_xy.h5ad", "--label-key", "cell_type", "--task", "st"],
                                       ["(it has obs columns array_row, array_col: put them in obsm['spatial']"]),
    # -- more of the same kind
    "paper_dataset_without_url": Case(["--dataset", "tumor", "--data-dir", "{empty}"], ["{empty}/scrna/li_tumor.h5ad", "cblast.gao-lab.org"], offline=True),
    "garbage_h5ad": Case(["--data", "{d}/garbage.h5ad"], ["cannot read {d}/garbage.h5ad"]),
    "truncated_h5": Case(["--data", "{d}/truncated.h5"], ["cannot read {d}/truncated.h5"]),
    "missing_path": Case(["--data", "{d}/nowhere.h5ad"], ["{d}/nowhere.h5ad does not exist"]),
    "inf_values": Case(["--data", "{d}/inf.h5ad", "--label-key", "cell_type"], ["NaN or infinite"]),
    "nan_coordinates": Case(["--data", "{d}/nan_coords.h5ad", "--label-key", "cell_type", "--task", "st", "--k", "3"], ["obsm['spatial']", "finite"]),
    "no_labelled_spot": Case(["--data", "{d}/unlabelled_spatial.h5ad", "--label-key", "cell_type", "--task", "st", "--k", "3"], ["no cell has a label"]),
    "too_few_genes": Case(["--data", "{d}/three_genes.h5ad", "--label-key", "cell_type", "--k", "3"], ["only 3 genes", "--gene-k"]),
    "no_labels_no_n_clusters": Case(["--data", "{d}/good.h5ad", "--k", "3"], ["--n-clusters"]),
    "duplicate_names_then_failure": Case(["--data", "{d}/duplicates.h5ad", "--label-key", "cell_type", "--k", "3", "--n-clusters", "50"], ["n_clusters = 50"]),
    "malformed_cellblast": Case(["--data", "{d}/cellblast_bad.h5"], ["not a valid Cell BLAST data.h5"]),
    "negative_checkpoint_every": Case(["--dataset", "pbmc68k", "--checkpoint-every", "-3"], ["checkpoint_every must be ≥ 0"]),
    "negative_seed": Case(["--dataset", "pbmc68k", "--seed", "-1"], ["seeds must be in 0 …", "got -1"]),
    "diverging_lr": Case(["--dataset", "pbmc68k", "--lr", "1e8"], ["training diverged", "NaN or infinite at epoch 1", "lower --lr"]),
    "visium_without_positions": Case(["--data", "{d}/visium_no_positions"], ["spot coordinates"]),
    "visium_without_counts": Case(["--data", "{d}/visium_no_counts"], ["{d}/visium_no_counts has no filtered_feature_bc_matrix.h5",
                                                                      "raw_feature_bc_matrix.h5 holds every barcode"]),
    "plain_folder": Case(["--data", "{d}/plain_folder"], ["{d}/plain_folder is a folder but not a Space Ranger output"]),
    "no_genes": Case(["--data", "{d}/no_genes.h5ad", "--label-key", "cell_type"], ["40 cells and 0 genes", "nothing to cluster"]),
    "float16_on_cpu": Case(["--dataset", "pbmc68k", "--precision", "16-mixed", "--accelerator", "cpu"],
                           ["16-mixed", "needs a GPU", "bf16-mixed"]),
    # -- invalid numbers, one-class labels, places that cannot be written (runs that survive mistakes)
    "nan_lr": Case(["--dataset", "pbmc68k", "--lr", "nan"], ["lr must be a finite number", "nan"]),
    "inf_tau": Case(["--dataset", "pbmc68k", "--tau", "inf"], ["tau must be a finite number"]),
    "nan_dropout": Case(["--dataset", "pbmc68k", "--dropout", "nan"], ["dropout must be a finite number"]),
    "nan_weight_decay": Case(["--dataset", "pbmc68k", "--weight-decay=-inf"], ["weight_decay must be a finite number"]),
    "fractional_integer_in_yaml": Case(["--dataset", "pbmc68k", "--config", "{d}/fractional.yaml"], ["hvg must be a whole number", "2.9"]),
    "boolean_integer_in_yaml": Case(["--dataset", "pbmc68k", "--config", "{d}/boolean.yaml"], ["hvg must be a whole number", "True"]),
    "one_class_labels": Case(["--data", "{d}/one_class.h5ad", "--label-key", "cell_type", "--k", "3"], ["single class", "--n-clusters"]),
    "unwritable_output": Case(["--dataset", "pbmc68k", "--output", "/sys/scrcl-test-output"], ["/sys", "--output"]),
    "output_is_a_file": Case(["--dataset", "pbmc68k", "--output", "{d}/good.h5ad"], ["{d}/good.h5ad is a file", "--output"]),
    "output_under_a_file": Case(["--dataset", "pbmc68k", "--output", "{d}/good.h5ad", "--run-name", "x"],
                                ["{d}/good.h5ad is a file", "--output"]),
    "run_name_outside_output": Case(["--dataset", "pbmc68k", "--run-name", "../escaped"], ["--run-name", "inside --output"]),
    "unwritable_cache": Case(["--dataset", "pbmc68k"], ["cache directory /sys/scrcl-test-cache", "SCRCL_CACHE_DIR", "--no-cache"],
                             env={"SCRCL_CACHE_DIR": "/sys/scrcl-test-cache"}),
}
IN_DEFAULT_RUN = ["unknown_dataset", "missing_file_download_fails", "corrupt_h5ad", "n_clusters_above_cells"]


# -- inputs ----------------------------------------------------------------------------------------------
def _anndata(n=40, g=30, seed=0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    a = ad.AnnData(rng.poisson(2.0, size=(n, g)).astype(np.float32))
    a.obs_names = [f"c{i}" for i in range(n)]
    a.var_names = [f"g{j}" for j in range(g)]
    a.obs["cell_type"] = pd.Categorical(rng.choice(["a", "b", "c"], n))
    a.obs["batch"] = "b1"
    return a


def write_inputs(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    _anndata().write_h5ad(d / "good.h5ad")
    whole = (d / "good.h5ad").read_bytes()
    (d / "truncated.h5ad").write_bytes(whole[: len(whole) // 2])
    (d / "garbage.h5ad").write_bytes(b"this is not an HDF5 file\n" * 20)
    pd.DataFrame(_anndata().X).to_csv(d / "expression.csv")
    for name, value in (("nan", np.nan), ("inf", np.inf), ("negative", -1.0)):
        a = _anndata()
        a.X[3, 4] = value
        a.write_h5ad(d / f"{name}.h5ad")
    a = _anndata()
    a.X[:] = 0
    a.write_h5ad(d / "zeros.h5ad")
    _anndata(n=10).write_h5ad(d / "ten_cells.h5ad")
    _anndata(g=3).write_h5ad(d / "three_genes.h5ad")
    a = _anndata()
    a.obs["cell_type"] = pd.Categorical(["a"] * 40)
    a.write_h5ad(d / "one_class.h5ad")
    (d / "fractional.yaml").write_text("hvg: 2.9\n")
    (d / "boolean.yaml").write_text("hvg: true\n")
    a = _anndata()
    a.obsm["spatial"] = np.random.default_rng(1).normal(size=(40, 2))
    a.obsm["spatial"][5, 1] = np.nan
    a.write_h5ad(d / "nan_coords.h5ad")
    a = _anndata()
    a.obsm["spatial"] = np.random.default_rng(1).normal(size=(40, 2))
    a.obs["cell_type"] = np.nan
    a.write_h5ad(d / "unlabelled_spatial.h5ad")
    a = _anndata()
    a.obsm["X_spatial"] = np.random.default_rng(1).normal(size=(40, 2))
    a.write_h5ad(d / "x_spatial.h5ad")
    a = _anndata()
    a.obs["array_row"], a.obs["array_col"] = np.arange(40), np.arange(40) % 7
    a.write_h5ad(d / "obs_xy.h5ad")
    a = _anndata()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.obs_names = ["same"] * 40
    a.write_h5ad(d / "duplicates.h5ad")
    with h5py.File(d / "xy.h5", "w") as f:
        f["X"], f["Y"] = np.ones((20, 10), dtype=np.float32), np.zeros(20)
    (d / "truncated.h5").write_bytes((d / "xy.h5").read_bytes()[:200])
    (d / "xy.h5").unlink()
    with h5py.File(d / "cellblast_bad.h5", "w") as f:
        f["exprs"] = np.ones((20, 10), dtype=np.float32)
        f.create_group("obs").create_group("cell_type1")
    (d / "visium_no_positions" / "spatial").mkdir(parents=True)
    (d / "visium_no_counts" / "spatial").mkdir(parents=True)
    (d / "visium_no_counts" / "spatial" / "tissue_positions_list.csv").write_text("AAAC-1,1,0,0,7,3\n")
    (d / "visium_no_counts" / "raw_feature_bc_matrix.h5").write_bytes(b"")
    (d / "plain_folder").mkdir()
    _anndata()[:, :0].copy().write_h5ad(d / "no_genes.h5ad")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    output: Path
    cache: Path
    inputs: Path
    empty: Path


def _output_args(args: list, output: Path) -> list:
    """``--output OUT`` unless the case sets its own (an unwritable place, a file)."""
    return [] if "--output" in args else ["--output", str(output)]


def _fill(text: str, inputs: Path, empty: Path) -> str:
    return text.replace("{d}", str(inputs)).replace("{empty}", str(empty))


def _run_cli(name: str, root: Path, inputs: Path, data_dir: Path) -> Outcome:
    case = CASES[name]
    base = root / name
    output, cache, empty = base / "out", base / "cache", base / "empty_data"
    empty.mkdir(parents=True)
    env = {**os.environ, "SCRCL_DATA_DIR": str(data_dir), "SCRCL_CACHE_DIR": str(cache), "WANDB_MODE": "disabled", "MPLBACKEND": "Agg"}
    if case.offline:
        proxy = f"http://127.0.0.1:{_closed_port()}"
        env.update(https_proxy=proxy, http_proxy=proxy, HTTPS_PROXY=proxy, HTTP_PROXY=proxy, no_proxy="", NO_PROXY="")
    env.update(case.env)
    args = [_fill(a, inputs, empty) for a in case.args]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(PYTHON), str(TRAIN), *args, "--epochs", "1", *_output_args(args, output)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0, output, cache, inputs, empty)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad-inputs")
    write_inputs(d)
    return d


@pytest.fixture(scope="module")
def cli(request, tmp_path_factory, inputs, data_dir) -> dict:
    """Runs, all at once, the CLI of every case selected in this session; case name -> Outcome."""
    wanted = sorted(
        {item.callspec.params["name"] for item in request.session.items if getattr(item, "originalname", "") == "test_cli" and hasattr(item, "callspec")}
    )
    root = tmp_path_factory.mktemp("bad-runs")
    with ThreadPoolExecutor(max_workers=max(2, min(6, os.cpu_count() or 2))) as pool:
        futures = {name: pool.submit(_run_cli, name, root, inputs, data_dir) for name in wanted}
        return {name: f.result() for name, f in futures.items()}


def _files_under(path: Path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


def assert_one_clear_line(name: str, code: int, stdout: str, stderr: str, inputs: Path, empty: Path) -> str:
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    assert code == 2, f"exit code {code}; stderr:\n{stderr[-3000:]}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr[-3000:]}"
    line = lines[0]
    assert line.startswith("error: ")
    for text in CASES[name].expect:
        assert _fill(text, inputs, empty) in line, line
    return line


@pytest.mark.parametrize(
    "name", [n if n in IN_DEFAULT_RUN else pytest.param(n, marks=pytest.mark.slow) for n in CASES]
)
def test_cli(cli, name):
    out = cli[name]
    line = assert_one_clear_line(name, out.returncode, out.stdout, out.stderr, out.inputs, out.empty)
    print(f"\n{name} ({out.seconds:.1f} s): {line}")
    assert _files_under(out.output) == []  # no run directory, no result.h5ad / metrics.json, no temp file
    assert not [f for f in _files_under(out.cache) if Path(f).name.startswith(".")]  # no half-written cache
    assert _files_under(out.empty) == []  # a failed download leaves no partial file
    assert out.seconds < TIMEOUT / 2


@pytest.mark.parametrize("name", list(CASES))
def test_in_process(name, inputs, tmp_path, monkeypatch, capfd, data_dir):
    """Every case through ``train.main`` in this process (the same code path after start-up)."""
    import urllib.error

    import datamodules.download as download
    import train

    def no_network(*_, **__):
        raise urllib.error.URLError(OSError("no network in this test"))

    monkeypatch.setattr(download.urllib.request, "urlopen", no_network)
    monkeypatch.setenv("SCRCL_DATA_DIR", str(data_dir))
    monkeypatch.setenv("SCRCL_CACHE_DIR", str(tmp_path / "cache"))
    for key, value in CASES[name].env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    empty = tmp_path / "empty_data"
    empty.mkdir()
    args = [_fill(a, inputs, empty) for a in CASES[name].args]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        code = train.main([*args, "--epochs", "1", *_output_args(args, tmp_path / "out")])
    captured = capfd.readouterr()
    assert_one_clear_line(name, code, captured.out, captured.err, inputs, empty)
    shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))]
    assert not shown, [str(w.message) for w in shown]
    assert _files_under(tmp_path / "out") == [] and _files_under(empty) == []


@pytest.mark.slow
def test_a_good_file_runs_so_the_output_checks_above_are_not_vacuous(inputs, tmp_path, data_dir):
    env = {**os.environ, "SCRCL_DATA_DIR": str(data_dir), "SCRCL_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "disabled", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [str(PYTHON), str(TRAIN), "--data", str(inputs / "good.h5ad"), "--label-key", "cell_type", "--k", "3", "--epochs", "1",
         "--hidden-dim", "16", "--no-umap", "--no-progress", "--logger", "none", "--output", str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = _files_under(tmp_path / "out")
    assert any(f.endswith("result.h5ad") for f in files) and any(f.endswith("metrics.json") for f in files)
