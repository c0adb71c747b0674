"""evaluate.py --analyses and benchmarks/paper_table.py as users run them, on a real (short) run of PBMC 68k."""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import partial
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from datamodules.datamodule import ScRCLDataModule
from scrcl.eval.analyses import cluster_categories, comparable_clusters, rank_markers

ROOT = Path(__file__).resolve().parents[2]
SCORE_LINE = re.compile(r"^ACC \d\.\d{4} NMI \d\.\d{4} ARI -?\d\.\d{4} F1 \d\.\d{4}$")
ANALYSES = ("umap_input_vs_embedding.png", "umap_coordinates.csv", "markers_top.csv", "markers_dotplot.png",
            "markers_heatmap.png", "paga.png", "paga_connectivities.csv")
PBMC_MARKERS = {"CD3D", "CD3E", "LYZ", "CD79A", "CD79B", "NKG7", "GNLY", "CST3", "FCER1A", "HLA-DRA", "S100A8", "CD14"}


def script(path: str, *args, cwd: Path, data_dir: Path, timeout: int = 600):
    env = {**os.environ, "SCRCL_DATA_DIR": str(data_dir), "WANDB_MODE": "disabled", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / path), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def in_process(path: str, *args, capsys, monkeypatch, data_dir: Path):
    """The script's ``main`` through ``run_entry`` in this process (a subprocess costs ~4 s of imports each): the
    exit code and stderr as a subprocess would give them. The first case of each bad-input test still runs the real
    entry point in a subprocess."""
    import importlib.util
    from types import SimpleNamespace

    from scrcl.errors import run_entry

    monkeypatch.setenv("SCRCL_DATA_DIR", str(data_dir))
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_in_process", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    code = run_entry(module.main, [str(a) for a in args])
    return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)


def one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir):
    """A real two-epoch run of PBMC 68k (small width), then ``evaluate.py RUN --analyses`` on it."""
    tmp = tmp_path_factory.mktemp("analyses")
    train = script("train.py", "--dataset", "pbmc68k", "--epochs", "2", "--hidden-dim", "32", "--logger", "none",
                   "--no-progress", "--no-umap", "--output", tmp / "runs", "--run-name", "r", cwd=tmp, data_dir=data_dir)
    assert train.returncode == 0, train.stderr[-3000:]
    run_dir = tmp / "runs" / "r"
    proc = script("evaluate.py", run_dir, "--analyses", cwd=tmp, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


# -- evaluate.py --analyses ------------------------------------------------------------------------
def test_analyses_write_every_file(finished_run):
    run_dir, proc = finished_run
    out = run_dir / "analyses"
    for name in ANALYSES:
        assert (out / name).stat().st_size > 500, name
    for name in ("umap_input_vs_embedding.png", "markers_dotplot.png", "markers_heatmap.png", "paga.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    # The last line is the run's score line, the same figures as its metrics.json.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = proc.stdout.strip().splitlines()[-1]
    assert SCORE_LINE.match(last)
    assert last == " ".join(f"{k.upper()} {metrics[k]:.4f}" for k in ("acc", "nmi", "ari", "f1"))


def test_marker_table_has_every_cluster_and_real_genes(finished_run):
    run_dir, _ = finished_run
    result = ad.read_h5ad(run_dir / "result.h5ad")
    markers = pd.read_csv(run_dir / "analyses" / "markers_top.csv", dtype={"cluster": str})
    assert list(markers.columns) == ["cluster", "rank", "gene", "score", "logfoldchange", "pval", "pval_adj"]
    sizes = result.obs["scrcl_cluster"].astype(str).value_counts()
    assert set(markers["cluster"]) == {c for c, n in sizes.items() if n >= 2}
    assert set(markers["gene"]) <= set(result.var_names)
    assert PBMC_MARKERS & set(markers[markers["rank"] <= 5]["gene"]), "no known PBMC marker among the top genes"
    assert markers["pval_adj"].between(0, 1).all()
    for _, group in markers.groupby("cluster"):
        assert list(group["rank"]) == list(range(1, len(group) + 1))
        assert np.all(np.diff(group["score"].to_numpy()) <= 1e-6), "genes not ranked by score"
    # Each cluster's top gene is more expressed in that cluster than in the rest (log fold change > 0).
    top = markers[markers["rank"] == 1]
    assert (top["logfoldchange"] > 0).all()


def test_umap_and_paga_tables(finished_run):
    run_dir, _ = finished_run
    result = ad.read_h5ad(run_dir / "result.h5ad")
    coords = pd.read_csv(run_dir / "analyses" / "umap_coordinates.csv")
    assert len(coords) == result.n_obs == 700
    assert list(coords["cell"].astype(str)) == list(result.obs_names)
    assert np.isfinite(coords[["input_umap1", "input_umap2", "embedding_umap1", "embedding_umap2"]].to_numpy()).all()
    assert (coords["label"].to_numpy() == result.obs["label"].astype(str).to_numpy()).all()
    assert (coords["cluster"].astype(str).to_numpy() == result.obs["scrcl_cluster"].astype(str).to_numpy()).all()
    conn = pd.read_csv(run_dir / "analyses" / "paga_connectivities.csv", index_col=0)
    clusters = sorted(result.obs["scrcl_cluster"].astype(str).unique(), key=lambda v: (len(v), v))
    assert list(conn.index.astype(str)) == clusters and list(conn.columns) == clusters
    values = conn.to_numpy()
    np.testing.assert_allclose(values, values.T)
    assert values.min() >= 0 and values.max() <= 1 and values.max() > 0


def test_bad_run_directories_are_one_line(tmp_path, data_dir):
    for analyses in (["--analyses"], []):  # the scores alone said "has no result.h5ad" of a folder that is not there
        proc = script("evaluate.py", tmp_path / "nope", *analyses, cwd=tmp_path, data_dir=data_dir)
        one_line_error(proc, "is not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = script("evaluate.py", empty, "--analyses", cwd=tmp_path, data_dir=data_dir)
    one_line_error(proc, "has no result.h5ad")
    assert not (empty / "analyses").exists()
    multi = tmp_path / "multi"
    (multi / "seed5").mkdir(parents=True)
    (multi / "seed5" / "result.h5ad").write_bytes(b"")
    for analyses in (["--analyses"], []):  # the scores alone share the check (scrcl.train.results.check_run_dir)
        proc = script("evaluate.py", multi, *analyses, cwd=tmp_path, data_dir=data_dir)
        one_line_error(proc, "several seeds", "seed5")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "result.h5ad").write_bytes(b"not an h5ad file")
    proc = script("evaluate.py", broken, "--analyses", cwd=tmp_path, data_dir=data_dir)
    one_line_error(proc, "cannot read")
    proc = script("evaluate.py", empty, broken, "--analyses", cwd=tmp_path, data_dir=data_dir)
    one_line_error(proc, "exactly one run directory")


def test_changed_input_is_refused(finished_run, tmp_path, data_dir):
    """A result whose cells no longer match the rebuilt input (here: cells dropped) is refused in one line."""
    run_dir, _ = finished_run
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    result = ad.read_h5ad(run_dir / "result.h5ad")
    result[:600].copy().write_h5ad(copy / "result.h5ad")
    proc = script("evaluate.py", copy, "--analyses", cwd=tmp_path, data_dir=data_dir)
    one_line_error(proc, "changed since the run")
    assert not (copy / "analyses").exists()


# -- marker ranking edge cases (synthetic: shapes only) ----------------------------------------------
def _synthetic(clusters: list[str]):
    rng = np.random.default_rng(0)
    x = np.log1p(rng.poisson(1.0, (len(clusters), 12))).astype(np.float32)
    obs = pd.DataFrame({"scrcl_cluster": cluster_categories(clusters)}, index=[f"c{i}" for i in range(len(clusters))])
    return ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(12)]))


def test_clusters_are_ordered_numerically():
    assert list(cluster_categories(["10", "2", "0", "1", "2"]).categories) == ["0", "1", "2", "10"]


def test_a_one_cell_cluster_is_left_out_of_the_tests():
    adata = _synthetic(["0"] * 10 + ["1"] * 9 + ["2"])
    assert comparable_clusters(adata.obs["scrcl_cluster"]) == ["0", "1"]
    markers = rank_markers(adata, n_top=4)
    assert list(markers["cluster"].unique()) == ["0", "1"] and len(markers) == 8


def test_a_single_cluster_has_no_markers():
    assert rank_markers(_synthetic(["0"] * 20)) is None


# -- benchmarks/paper_table.py ---------------------------------------------------------------------
def _row(text: str, dataset: str, method: str | None = None) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == dataset and (method is None or method in cells):
            return cells
    raise AssertionError(f"no row {dataset} / {method} in the table")


def test_paper_table_matches_the_runs_and_resumes(tmp_path, data_dir):
    """One seed, two epochs (~40 s): the table's figures are the run's metrics.json and the baselines' JSON; a
    second call trains nothing; other settings against the same runs are refused."""
    args = ["--datasets", "pbmc68k", "--seeds", "5", "--epochs", "2", "--set", "hidden_dim=32", "--set", "umap=false",
            "--runs-dir", tmp_path / "runs", "--output", tmp_path / "RESULTS.md"]
    proc = script("benchmarks/paper_table.py", *args, cwd=tmp_path, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "RESULTS.md").read_text()
    metrics = json.loads((tmp_path / "runs" / "pbmc68k" / "seed5" / "metrics.json").read_text())
    assert metrics["epoch"] == 2 and metrics["seed"] == 5
    ours = _row(text, "pbmc68k", "scRCL (best silhouette, no labels)")  # the generic config's report
    assert ours[5:9] == [f"{metrics[k]:.4f}" for k in ("acc", "nmi", "ari", "f1")]
    final = _row(text, "pbmc68k", "scRCL (final epoch)")  # and the final epoch of the same run beside it
    assert final[5:9] == [f"{metrics['final_' + k]:.4f}" for k in ("acc", "nmi", "ari", "f1")] and final[9] == "epoch 2"
    assert ours[1:4] == ["700", "765", "10"]
    base = json.loads((tmp_path / "runs" / "pbmc68k" / "baselines_seed5.json").read_text())
    assert _row(text, "pbmc68k", "PCA(30) + k-means")[5:9] == [f"{base['pca_kmeans'][k]:.4f}" for k in ("acc", "nmi", "ari", "f1")]
    leiden = _row(text, "pbmc68k", "Leiden (resolution for k)")
    assert leiden[5:9] == [f"{base['leiden'][k]:.4f}" for k in ("acc", "nmi", "ari", "f1")]
    assert base["leiden"]["n_found"] == 10, "the resolution search should reach the 10 classes on PBMC 68k"
    margins = text.split("## Margins")[1].split("##")[0]  # one seed: the difference alone, no interval
    assert _row(margins, "pbmc68k")[1:5] == [f"{metrics['ari'] - base['pca_kmeans']['ari']:+.3f} (1 seed)",
                                             f"{metrics['ari'] - base['leiden']['ari']:+.3f} (1 seed)",
                                             f"{metrics['nmi'] - base['pca_kmeans']['nmi']:+.3f} (1 seed)",
                                             f"{metrics['nmi'] - base['leiden']['nmi']:+.3f} (1 seed)"]
    final_part, oracle_part = text.split("## Oracle epoch")
    assert oracle_part.startswith(" — uses the labels to pick the epoch")
    assert _row(oracle_part, "pbmc68k")[1:5] == [f"{metrics['oracle_' + k]:.4f}" for k in ("acc", "nmi", "ari", "f1")]
    assert "oracle" not in final_part.lower()
    live = pd.read_csv(tmp_path / "runs" / "pbmc68k" / "seed5" / "history.csv").iloc[-1]  # EMA: the live weights beside
    live_row = _row(text, "pbmc68k", "scRCL (final epoch, live weights: no averaging, as the reference trains)")
    assert live_row[5:9] == [f"{live['live_' + k]:.4f}" for k in ("acc", "nmi", "ari", "f1")]
    chosen = _row(oracle_part.split("## The label-free report")[1], "pbmc68k")  # what the report changed, same run
    assert chosen[1:5] == [f"{metrics['ari'] - metrics['final_ari']:+.3f} (1 seed)",
                           f"{metrics['nmi'] - metrics['final_nmi']:+.3f} (1 seed)",
                           f"{metrics['ari'] - live['live_ari']:+.3f} (1 seed)",
                           f"{metrics['oracle_ari'] - metrics['ari']:+.3f} (1 seed)"]
    for fact in ("Command: `python benchmarks/paper_table.py --datasets pbmc68k", "Date: ", "machine: ", "Total time",
                 f"Precision 32-true; device cpu; torch threads {metrics['torch_threads']} "):
        assert fact in text
    assert not (tmp_path / "runs" / "pbmc68k" / "seed5" / "checkpoints").exists()

    assert ours[9] == "epoch 2; seeds 5"
    # Again, with seeds 5,15 for the table but --seeds-for keeping pbmc68k at seed 5: nothing trains.
    more_seeds = [("5,15" if a == "5" else a) for a in args] + ["--seeds-for", "pbmc68k=5"]
    again = script("benchmarks/paper_table.py", *more_seeds, cwd=tmp_path, data_dir=data_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "done before" in again.stdout and not (tmp_path / "runs" / "pbmc68k" / "seed15").exists()
    text = (tmp_path / "RESULTS.md").read_text()
    assert _row(text, "pbmc68k", "scRCL (best silhouette, no labels)")[5:10] == ours[5:10]
    assert "over seeds 5, 15 (other seeds where the note says so: pbmc68k)" in text

    # A run linked in from another study's directory counts once its settings match, and the table says it is a link
    # (as a path relative to where the table was made, like every path in a results file).
    elsewhere = tmp_path / "other_study" / "pbmc68k-seed5"
    elsewhere.parent.mkdir()
    (tmp_path / "runs" / "pbmc68k" / "seed5").rename(elsewhere)
    (tmp_path / "runs" / "pbmc68k" / "seed5").symlink_to(elsewhere)
    linked = script("benchmarks/paper_table.py", *args, cwd=tmp_path, data_dir=data_dir)
    assert linked.returncode == 0, linked.stderr[-3000:]
    text = (tmp_path / "RESULTS.md").read_text()
    assert _row(text, "pbmc68k", "scRCL (best silhouette, no labels)")[5:10] == ours[5:10]
    assert "links to another study's run directory" in text and "pbmc68k seed 5 → `other_study/pbmc68k-seed5`" in text
    assert str(tmp_path) not in next(line for line in text.splitlines() if "links to another study's" in line)
    # A link to a run of another seed, or to an unfinished run, is refused before any work (no baselines computed).
    seed15 = tmp_path / "runs" / "pbmc68k" / "seed15"
    seed15.symlink_to(elsewhere)
    with_15 = [("5,15" if a == "5" else a) for a in args]
    one_line_error(script("benchmarks/paper_table.py", *with_15, cwd=tmp_path, data_dir=data_dir), "seed 5, not seed 15")
    unfinished = tmp_path / "other_study" / "unfinished"
    unfinished.mkdir()
    seed15.unlink()
    seed15.symlink_to(unfinished)
    one_line_error(script("benchmarks/paper_table.py", *with_15, cwd=tmp_path, data_dir=data_dir), "holds no finished run")
    assert not (tmp_path / "runs" / "pbmc68k" / "baselines_seed15.json").exists() and not any(unfinished.iterdir())
    seed15.unlink()

    changed = [("3" if a == "2" else a) for a in args]  # --epochs 3 against runs made with 2
    other = script("benchmarks/paper_table.py", *changed, cwd=tmp_path, data_dir=data_dir)
    one_line_error(other, "other settings", "epochs")


def test_paper_table_bad_input_is_one_line(tmp_path, data_dir, capsys, monkeypatch):
    out = tmp_path / "RESULTS.md"
    for args, fragment in ((["--datasets", "no_such_set"], "unknown dataset"), (["--seeds", "a,b"], "seeds must be integers"),
                           (["--set", "hidden_dim"], "key=value"), (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
                           (["--set", "tms=[10"], "--set tms=[10: the value is not valid YAML"),
                           (["--output", tmp_path], f"argument --output: {tmp_path} is a directory"),
                           # a dataset with no file (and none downloadable) stops the table before pbmc68k trains
                           (["--datasets", "pbmc68k,zeisel", "--epochs", "1"], "dataset 'zeisel': no file found"),
                           (["--datasets", "pbmc68k", "--set", "no_such_key=1"], "unknown config key"),
                           (["--datasets", "pbmc68k", "--seeds-for", "pollen=5"], "not among the table's datasets"),
                           (["--datasets", "pbmc68k", "--seeds-for", "pbmc68k"], "NAME=SEEDS"),
                           (["--datasets", "pbmc68k", "--seeds-for", "pbmc68k=x"], "seeds must be integers"),
                           # checked before any run starts (it began training seed 5 on this line's order 5,-1)
                           (["--datasets", "pbmc68k", "--seeds=-1,5"], "seeds must be in 0 … 4294967295 (numpy's range), got -1"),
                           (["--datasets", "pbmc68k", "--seeds-for", "pbmc68k=5,-2"], "got -2")):
        run = script if fragment == "unknown dataset" else partial(in_process, capsys=capsys, monkeypatch=monkeypatch)
        proc = run("benchmarks/paper_table.py", *args, "--output", out, "--runs-dir", tmp_path / "runs", data_dir=data_dir,
                   **({"cwd": tmp_path} if run is script else {}))
        one_line_error(proc, fragment)
        assert not (tmp_path / "runs" / "pbmc68k").exists(), args  # nothing trained before the mistake was found
    assert not out.exists()


def test_local_datasets_are_the_ones_on_disk(data_dir):
    from scrcl.experiments.tables import local_datasets
    from datamodules.registry import get_spec

    names = local_datasets(str(data_dir), "sc")
    assert "pbmc68k" in names and "pbmc10x" in names
    for name in names:
        spec = get_spec(name)
        assert spec.task == "sc"
        assert any(all((data_dir / f.path).exists() for f in s.files.values()) for s in spec.sources)
    assert not {n for n in local_datasets(str(data_dir), "st")} & set(names)


def test_leiden_resolution_search_reaches_k_without_labels(data_dir):
    """On PBMC 68k's preprocessed input the bisection finds a resolution giving exactly k clusters."""
    from scrcl.experiments.tables import leiden_with_k, table_config

    config = table_config("pbmc68k", 2, {}, str(data_dir))
    datamodule = ScRCLDataModule.from_config(config)
    datamodule.setup("fit")
    x = datamodule.batch.x.numpy()
    for k in (4, 10):
        out = leiden_with_k(x, k, seed=5)
        assert out["n_found"] == k == len(np.unique(out["pred"])) and out["resolution"] > 0
        assert out["pred"].shape == (700,)


@pytest.mark.slow
def test_baselines_do_not_depend_on_the_callers_thread_count(data_dir):
    """Leiden(k) and PCA + k-means give the same partition whether the caller runs 1 or 2 BLAS threads.
    On DLPFC 151673 (3611 spots, 3000 HVGs) Leiden's bisection used to land on resolution 0.953 with one
    thread and 0.938 with two, and a different partition."""
    from threadpoolctl import threadpool_limits

    from scrcl.experiments.tables import leiden_with_k
    from scrcl.experiments.tables import pca_kmeans
    from scrcl.train.config import resolve_config

    config = resolve_config(dataset="dlpfc_151673", overrides={"data_dir": str(data_dir)})
    datamodule = ScRCLDataModule.from_config(config)
    datamodule.setup("fit")
    x = datamodule.batch.x.numpy()
    runs = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            runs.append((leiden_with_k(x, 7, seed=5), pca_kmeans(x, 7, seed=5)))
    (leiden1, km1), (leiden2, km2) = runs
    assert leiden1["resolution"] == leiden2["resolution"]
    np.testing.assert_array_equal(leiden1["pred"], leiden2["pred"])
    np.testing.assert_array_equal(km1, km2)
