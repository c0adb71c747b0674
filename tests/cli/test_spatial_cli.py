"""The spatial path as users run it, on real DLPFC 151673 data: train.py on the registry slice, on a user's
own .h5ad and on a Visium folder cut from it, and benchmarks/spatial_table.py.

A user's own files are a real piece of the slice: the spots of its lower-right corner (1221 spots, layers
L2-L6 and WM, and the 28 spots the annotation leaves out), every gene, the counts as they are.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import partial
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from datamodules.readers import unify_label_vocabulary
from scrcl.eval.clustering import refine_spatial
from scrcl.eval.metrics import clustering_scores
from tests.cli.test_analyses import in_process

ROOT = Path(__file__).resolve().parents[2]
SCORES = ("acc", "nmi", "ari", "f1")
SMALL = ["--hidden-dim", "32", "--no-progress", "--hvg", "500", "--k", "6", "--no-umap"]  # domain maps are still drawn


def script(path: str, *args, cwd: Path, data_dir: Path, env: dict | None = None, timeout: int = 600):
    full_env = {**os.environ, "SCRCL_DATA_DIR": str(data_dir), "WANDB_MODE": "disabled", "MPLBACKEND": "Agg",
                "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / path), *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def unified(values) -> pd.Series:
    s = pd.Series(values, dtype=object)
    return unify_label_vocabulary(s.where(s.notna(), None))


# -- the real slice as a user's own files -----------------------------------------------------------------
@pytest.fixture(scope="module")
def corner(data_dir, tmp_path_factory) -> ad.AnnData:
    """The lower-right corner of DLPFC 151673, as an .h5ad with obsm['spatial'] and layer_guess."""
    full = ad.read_h5ad(data_dir / "derived/DLPFC_151673.h5ad")
    xy = full.obsm["spatial"]
    sub = full[(xy[:, 0] > 6000) & (xy[:, 1] > 6500)].copy()
    assert sub.n_obs == 1221 and int(sub.obs["layer_guess"].isna().sum()) == 28
    sub.uns = {}
    path = tmp_path_factory.mktemp("own") / "corner.h5ad"
    sub.write_h5ad(path)
    sub.uns["path"] = str(path)
    return sub


def write_visium_folder(folder: Path, a: ad.AnnData) -> None:
    """Space Ranger layout: filtered_feature_bc_matrix.h5, spatial/tissue_positions_list.csv (no header),
    and metadata.tsv whose layer column mixes the 'Layer3' and 'L3' spellings."""
    (folder / "spatial").mkdir(parents=True)
    m = sp.csr_matrix(a.X).astype(np.int32)
    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "w") as f:  # genes x spots CSC = spots x genes CSR
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.array(a.obs_names, dtype="S"))
        g.create_dataset("data", data=m.data)
        g.create_dataset("indices", data=m.indices.astype(np.int64))
        g.create_dataset("indptr", data=m.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array([m.shape[1], m.shape[0]], dtype=np.int32))
        feats = g.create_group("features")
        feats.create_dataset("id", data=np.array(a.var["gene_ids"], dtype="S"))
        feats.create_dataset("name", data=np.array(a.var_names, dtype="S"))
        feats.create_dataset("feature_type", data=np.array(["Gene Expression"] * m.shape[1], dtype="S"))
    xy = a.obsm["spatial"].astype(int)
    positions = pd.DataFrame({"barcode": a.obs_names, "in_tissue": 1, "array_row": a.obs["array_row"].to_numpy(),
                              "array_col": a.obs["array_col"].to_numpy(), "pxl_row": xy[:, 1], "pxl_col": xy[:, 0]})
    positions.iloc[::-1].to_csv(folder / "spatial" / "tissue_positions_list.csv", header=False, index=False)
    layers = a.obs["layer_guess"].astype(object).to_numpy()
    short = np.array([v.replace("Layer", "L") if isinstance(v, str) and i % 2 else v for i, v in enumerate(layers)], dtype=object)
    assert {"L3", "Layer3"} <= set(short[pd.notna(short)])
    pd.DataFrame({"layer_guess": short}, index=a.obs_names).to_csv(folder / "metadata.tsv", sep="\t")


# -- the registry slice -----------------------------------------------------------------------------------
def test_dlpfc_151673_two_epochs_refined_and_raw_scores_and_domain_maps(tmp_path, data_dir):
    """metrics.json holds the refined figures under acc/nmi/ari/f1 and the raw k-means under *_unrefined,
    both recomputed here from result.h5ad; the maps are written at the UMAP cadence and at the end."""
    proc = script("train.py", "--dataset", "dlpfc_151673", "--hidden-dim", "32", "--epochs", "2", "--logger", "none",
                  "--eval-every", "1", "--umap-every", "1", "--no-progress", "--output", tmp_path, "--run-name", "r",
                  cwd=tmp_path, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "r"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result = ad.read_h5ad(run_dir / "result.h5ad")
    assert (metrics["task"], metrics["n_cells"], metrics["epoch"]) == ("st", 3611, 2)
    truth = result.obs["label"].astype(str).to_numpy()
    refined = result.obs["scrcl_cluster"].astype(int).to_numpy()
    raw = result.obs["scrcl_cluster_unrefined"].astype(int).to_numpy()
    np.testing.assert_array_equal(refined, refine_spatial(raw, result.obsm["spatial"], 50))
    assert (refined != raw).mean() > 0.01  # the refinement did something, so the two sets of keys differ
    expected = {**clustering_scores(truth, refined), **{f"{k}_unrefined": v for k, v in clustering_scores(truth, raw).items()}}
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    assert metrics["cluster_sizes"] == np.bincount(refined, minlength=7).tolist()
    history = pd.read_csv(run_dir / "history.csv")
    assert history["ari"].iloc[-1] == pytest.approx(metrics["ari"]) and history["ari_unrefined"].iloc[-1] == pytest.approx(metrics["ari_unrefined"])
    assert is_png(run_dir / "domains_final.png") and is_png(run_dir / "domains" / "epoch_0001.png")
    assert sorted(p.name for p in (run_dir / "domains").iterdir()) == ["epoch_0001.png"]  # epoch 2 is the final map
    assert not [p for p in run_dir.rglob(".*.png")], "a temporary PNG was left behind"
    assert is_png(run_dir / "umap_final.png")  # the embedding's UMAP stays


# -- a user's own files -----------------------------------------------------------------------------------
def test_own_spatial_h5ad_with_label_key_and_n_clusters(tmp_path, data_dir, corner):
    """--data FILE --task st --label-key KEY --n-clusters C; W&B (offline) receives the domain map."""
    proc = script("train.py", "--data", corner.uns["path"], "--task", "st", "--label-key", "layer_guess", "--n-clusters", "5",
                  "--epochs", "2", "--logger", "wandb", "--output", tmp_path, "--run-name", "own", *SMALL,
                  cwd=tmp_path, data_dir=data_dir, env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "note:" not in proc.stdout  # the task was given: nothing to point out
    run_dir = tmp_path / "own"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    labelled = corner[corner.obs["layer_guess"].notna().to_numpy()]
    assert (metrics["task"], metrics["n_cells"], metrics["n_genes"], metrics["n_clusters"]) == ("st", 1193, 500, 5)
    assert len(metrics["cluster_sizes"]) == 5 and "ari_unrefined" in metrics
    result = ad.read_h5ad(run_dir / "result.h5ad")
    assert list(result.obs_names) == list(labelled.obs_names)  # the unannotated spots were dropped, the rest in order
    np.testing.assert_array_equal(result.obsm["spatial"], labelled.obsm["spatial"])
    assert list(result.obs["label"].astype(str)) == list(unified(labelled.obs["layer_guess"]))
    assert metrics["ari"] == pytest.approx(clustering_scores(result.obs["label"].astype(str), result.obs["scrcl_cluster"].astype(str))["ari"])
    assert is_png(run_dir / "domains_final.png")
    logged = list((run_dir / "wandb").glob("offline-run-*/files/media/images/domains_final_*.png"))
    assert len(logged) == 1 and logged[0].read_bytes()[:4] == b"\x89PNG"


def test_a_vote_wider_than_a_domain_is_pointed_out(tmp_path, data_dir, corner):
    """The spatial vote over more nearest spots than an average domain holds merges domains (a helper's 60-spot file
    ended with one domain at the default radius of 50, silently); the run says so before it trains."""
    proc = script("train.py", "--data", corner.uns["path"], "--task", "st", "--label-key", "layer_guess", "--n-clusters", "5",
                  "--radius", "300", "--epochs", "1", "--logger", "none", "--output", tmp_path, "--run-name", "wide", *SMALL,
                  cwd=tmp_path, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [line for line in proc.stdout.splitlines() if line.startswith("note:")]
    assert notes == ["note: the spatial vote relabels each spot by its 300 nearest spots (radius), more than a domain holds "
                     "on average here (1193 spots / 5 clusters = 239): it can merge domains into one; a smaller --radius "
                     "keeps them (--radius 0: no vote)"]


def test_file_with_coordinates_but_no_task_says_so_and_runs_as_given(tmp_path, data_dir, corner):
    """Also: a --radius given for this scRNA-seq run is said to be unused (it was recorded in config.yaml, silently)."""
    proc = script("train.py", "--data", corner.uns["path"], "--label-key", "layer_guess", "--epochs", "1", "--logger", "none",
                  "--radius", "10", "--output", tmp_path, "--run-name", "sc", *SMALL, cwd=tmp_path, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [line for line in proc.stdout.splitlines() if line.startswith("note:")]
    assert sorted(notes) == sorted([
        "note: corner.h5ad has spatial coordinates (obsm['spatial']) but runs as scRNA-seq (task sc); pass --task st for "
        "spatial domains",
        "note: radius = 10 is set, but the spatial vote is for spatial domains (task st): this scRNA-seq run has none"])
    metrics = json.loads((tmp_path / "sc" / "metrics.json").read_text())
    assert metrics["task"] == "sc" and metrics["n_cells"] == 1221  # not switched: no spot dropped, no refinement
    assert "ari_unrefined" not in metrics and not (tmp_path / "sc" / "domains_final.png").exists()


def test_visium_folder_with_mixed_layer_spellings(tmp_path, data_dir, corner):
    """A Space Ranger folder + metadata.tsv where half the spots say 'Layer3' and half 'L3': train.py gives one
    vocabulary and the same spots, coordinates and layers as the .h5ad."""
    folder = tmp_path / "section"
    write_visium_folder(folder, corner)
    proc = script("train.py", "--data", folder, "--task", "st", "--label-key", "layer_guess", "--epochs", "1",
                  "--logger", "none", "--output", tmp_path, "--run-name", "v", *SMALL, cwd=tmp_path, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert (metrics["task"], metrics["n_cells"], metrics["n_clusters"], metrics["data"]["reader"]) == ("st", 1193, 6, "visium")
    result = ad.read_h5ad(tmp_path / "v" / "result.h5ad")
    labelled = corner[corner.obs["layer_guess"].notna().to_numpy()]
    assert list(result.obs["label"].cat.categories) == ["L2", "L3", "L4", "L5", "L6", "WM"]
    assert list(result.obs["label"].astype(str)) == list(unified(labelled.obs["layer_guess"]))
    assert list(result.obs_names) == list(labelled.obs_names)
    np.testing.assert_array_equal(result.obsm["spatial"], labelled.obsm["spatial"])
    assert is_png(tmp_path / "v" / "domains_final.png")


def test_spatial_note_sees_coordinates_without_reading_the_data(tmp_path, corner):
    from datamodules.loading import spatial_note

    assert "has spatial coordinates" in spatial_note(corner.uns["path"])
    plain = corner.copy()
    del plain.obsm["spatial"]
    plain.uns = {}
    plain.write_h5ad(tmp_path / "plain.h5ad")
    assert spatial_note(tmp_path / "plain.h5ad") is None
    (tmp_path / "broken.h5ad").write_bytes(b"not hdf5")
    assert spatial_note(tmp_path / "broken.h5ad") is None  # the reader reports a bad file, not this note
    write_visium_folder(tmp_path / "section", corner[:50].copy())
    assert "has spatial coordinates" in spatial_note(tmp_path / "section")


# -- benchmarks/spatial_table.py ----------------------------------------------------------------------------
def _row(text: str, dataset: str, method: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == dataset and method in cells:
            return cells
    raise AssertionError(f"no row {dataset} / {method} in the table")


@pytest.mark.slow
def test_spatial_table_matches_the_runs_and_resumes(tmp_path, data_dir):
    """One slice, one seed, two epochs (~70-100 s on 2 busy cores, three invocations): every figure of the table is the run's metrics.json or the
    baselines' JSON, whose refined predictions are the majority vote of the raw ones; a second call trains nothing."""
    args = ["--datasets", "dlpfc_151673", "--seeds", "5", "--set", "epochs=2", "--set", "hidden_dim=32",
            "--runs-dir", tmp_path / "runs", "--output", tmp_path / "SPATIAL.md"]
    proc = script("benchmarks/spatial_table.py", *args, cwd=tmp_path, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "SPATIAL.md").read_text()
    run_dir = tmp_path / "runs" / "published" / "dlpfc_151673" / "seed5"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["epoch"], metrics["seed"], metrics["n_clusters"]) == (2, 5, 7)
    keys = ("ari", "nmi", "ari_unrefined", "nmi_unrefined")
    ours = _row(text, "dlpfc_151673", "scRCL (final epoch)")
    assert ours[1:4] == ["3611", "3000", "7"]
    assert ours[5:9] == [f"{metrics[k]:.4f}" for k in keys]
    base = json.loads((tmp_path / "runs" / "published" / "dlpfc_151673" / "baselines_seed5.json").read_text())
    assert base["params"]["radius"] == 50
    result = ad.read_h5ad(run_dir / "result.h5ad")  # the same spots in the same order as the baselines' batch
    truth, coords = result.obs["label"].astype(str).to_numpy(), result.obsm["spatial"]
    for method, name in (("pca_kmeans", "PCA(30) + k-means"), ("leiden", "Leiden (resolution for k)")):
        b = base[method]
        raw, refined = np.array(b["pred"]), np.array(b["pred_refined"])
        np.testing.assert_array_equal(refined, refine_spatial(raw, coords, 50))
        assert b["ari"] == pytest.approx(clustering_scores(truth, refined)["ari"])
        assert b["ari_unrefined"] == pytest.approx(clustering_scores(truth, raw)["ari"])
        assert _row(text, "dlpfc_151673", name)[5:9] == [f"{b[k]:.4f}" for k in keys]
    assert base["leiden"]["n_found"] == 7
    margins = text.split("## Margins")[1].split("##")[0]
    expected = [metrics["ari"] - base["pca_kmeans"]["ari"], metrics["ari_unrefined"] - base["pca_kmeans"]["ari_unrefined"],
                metrics["ari"] - base["leiden"]["ari"], metrics["ari_unrefined"] - base["leiden"]["ari_unrefined"],
                metrics["ari"] - base["leiden"]["ari_unrefined"]]
    assert _row(margins, "dlpfc_151673", "reported")[2:7] == [f"{d:+.3f} (1 seed)" for d in expected]
    assert "live weights" not in text and "## The label-free report" not in text  # no averaging, no selection: one report
    assert "oracle" not in text.split("## Oracle epoch")[0].lower()
    for fact in ("Command: `python benchmarks/spatial_table.py --datasets dlpfc_151673", "Date: ", "machine: ", "published"):
        assert fact in text
    assert is_png(run_dir / "domains_final.png") and not (run_dir / "checkpoints").exists()

    again = script("benchmarks/spatial_table.py", *args, cwd=tmp_path, data_dir=data_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "done before" in again.stdout and "seed 5: ACC" not in again.stdout
    assert _row((tmp_path / "SPATIAL.md").read_text(), "dlpfc_151673", "scRCL (final epoch)")[5:9] == ours[5:9]

    # --seeds-for gives one slice other seeds: the header names it, its row lists them, nothing is trained
    other = script("benchmarks/spatial_table.py", *[a if a != "5" else "15" for a in args], "--seeds-for", "dlpfc_151673=5",
                   cwd=tmp_path, data_dir=data_dir)
    assert other.returncode == 0, other.stderr[-3000:]
    assert "seed 5: ACC" not in other.stdout
    text = (tmp_path / "SPATIAL.md").read_text()
    assert "seeds 15 (other seeds where the note says so: dlpfc_151673)" in text
    row = _row(text, "dlpfc_151673", "scRCL (final epoch)")
    assert row[5:9] == ours[5:9] and row[9].startswith("epoch 2; seeds 5")

    changed = ["epochs=3" if a == "epochs=2" else a for a in args]  # against runs made with 2 epochs
    one_line_error(script("benchmarks/spatial_table.py", *changed, cwd=tmp_path, data_dir=data_dir), "other settings", "epochs")


@pytest.mark.slow
def test_spatial_table_generic_runs_the_file_without_the_slice_settings(tmp_path, data_dir):
    """--config generic: the run reads the slice's .h5ad as --data FILE --task st, with the generic k = 15
    where the published 151673 config says k = 5 (~45 s)."""
    import yaml

    proc = script("benchmarks/spatial_table.py", "--config", "generic", "--datasets", "dlpfc_151673", "--seeds", "5",
                  "--set", "epochs=2", "--set", "hidden_dim=32", "--runs-dir", tmp_path / "runs",
                  "--output", tmp_path / "SPATIAL_generic.md", cwd=tmp_path, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "generic" / "dlpfc_151673" / "seed5"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["dataset"] is None and config["data"] == str(data_dir / "derived/DLPFC_151673.h5ad")
    assert (config["task"], config["label_key"], config["k"]) == ("st", "layer_guess", 15)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"]["reader"] == "h5ad" and metrics["n_cells"] == 3611
    text = (tmp_path / "SPATIAL_generic.md").read_text()
    assert "generic settings" in text and "`--data FILE --task st --label-key layer_guess`" in text
    assert _row(text, "dlpfc_151673", "scRCL (final epoch)")[5] == f"{metrics['ari']:.4f}"


@pytest.mark.slow
def test_spatial_table_reports_the_published_settings_both_ways(tmp_path, data_dir):
    """--set weight_averaging=ema --set select=silhouette on the published slice (~50 s): the table gives the
    label-free report, the same runs' final epoch and the live weights' final epoch (history.csv's last row: the
    published settings' own report, see tests/train/test_keep_found.py), and the section pairing them by seed."""
    proc = script("benchmarks/spatial_table.py", "--datasets", "dlpfc_151673", "--seeds", "5", "--set", "epochs=4",
                  "--set", "eval_every=2", "--set", "hidden_dim=32", "--set", "weight_averaging=ema",
                  "--set", "select=silhouette", "--runs-dir", tmp_path / "runs", "--output", tmp_path / "SPATIAL.md",
                  cwd=tmp_path, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "published" / "dlpfc_151673" / "seed5"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    live = pd.read_csv(run_dir / "history.csv").iloc[-1]
    assert metrics["selected_by"] == "silhouette" and metrics["final_epoch"] == int(live["epoch"]) == 4
    text = (tmp_path / "SPATIAL.md").read_text()
    settings = next(line for line in text.splitlines() if line.startswith("- Settings: published per-slice settings"))
    assert "`weight_averaging: ema`" in settings and "`select: silhouette`" in settings and "(`--set`)" in settings
    keys = ("ari", "nmi", "ari_unrefined", "nmi_unrefined")
    assert _row(text, "dlpfc_151673", "scRCL (best silhouette, no labels)")[5:9] == [f"{metrics[k]:.4f}" for k in keys]
    assert _row(text, "dlpfc_151673", "scRCL (final epoch)")[5:9] == [f"{metrics['final_' + k]:.4f}" for k in keys]
    live_row = _row(text, "dlpfc_151673", "scRCL (final epoch, live weights: no averaging, as the reference trains)")
    assert live_row[5:9] == [f"{live['live_' + k]:.4f}" for k in keys]
    margins = text.split("## Margins")[1].split("##")[0]
    base = json.loads((tmp_path / "runs" / "published" / "dlpfc_151673" / "baselines_seed5.json").read_text())
    for report, ours in (("reported", metrics["ari"]), ("live weights, final epoch", live["live_ari"])):
        assert _row(margins, "dlpfc_151673", report)[2] == f"{ours - base['pca_kmeans']['ari']:+.3f} (1 seed)"
    section = text.split("## The label-free report against the final epoch and the oracle epoch")[1].split("##")[0]
    assert _row(section, "dlpfc_151673", "dlpfc_151673")[3] == f"{metrics['ari'] - live['live_ari']:+.3f} (1 seed)"


def test_spatial_table_bad_input_is_one_line(tmp_path, data_dir, capsys, monkeypatch):
    out = tmp_path / "SPATIAL.md"
    for args, fragment in ((["--datasets", "no_such_set"], "unknown dataset"), (["--datasets", "pbmc68k"], "not a spatial dataset"),
                           (["--config", "mine"], "invalid choice"), (["--seeds", "a,b"], "seeds must be integers"),
                           (["--set", "radius"], "key=value"), (["--datasets", "dlpfc_151673", "--set", "no_such_key=1"], "unknown config key"),
                           (["--datasets", "dlpfc_151673", "--seeds-for", "dlpfc_151674=5"], "not among the table's slices"),
                           (["--datasets", "dlpfc_151673", "--seeds-for", "dlpfc_151673"], "NAME=SEEDS"),
                           (["--epochs", "0"], "argument --epochs: must be at least 1"),  # --epochs was unknown here
                           (["--epochs", "2", "--set", "epochs=3"], "--epochs 2 and --set epochs=3 disagree")):
        run = script if fragment == "unknown dataset" else partial(in_process, capsys=capsys, monkeypatch=monkeypatch)
        proc = run("benchmarks/spatial_table.py", *args, "--output", out, "--runs-dir", tmp_path / "runs", data_dir=data_dir,
                   **({"cwd": tmp_path} if run is script else {}))
        one_line_error(proc, fragment)
    assert not out.exists()
