"""studies/dynamics.py: per-term losses and what k-means finds in Z and in E, recomputed directly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

from studies import dynamics
from datamodules.datamodule import ScRCLDataModule


def test_records_match_a_direct_evaluation_of_the_same_network(data_dir):
    """With lr ≈ 0 the network after one step is the seeded initial one: rebuild it and score it directly."""
    import torch

    from scrcl.eval.clustering import kmeans
    from scrcl.train.config import resolve_config
    from scrcl.eval.metrics import clustering_scores
    from scrcl.train.module import build_module

    sets = {"hidden_dim": 16, "lr": 1e-30, "weight_decay": 0.0}
    (rec,) = dynamics.trace("pbmc68k", sets, epochs=1, every=1, seed=5, data_dir=str(data_dir))
    config = resolve_config(dataset="pbmc68k", overrides={**sets, "data_dir": str(data_dir)})
    dm = ScRCLDataModule.from_config(config)
    dm.setup("fit")
    torch.manual_seed(5)
    module = build_module(config, dm.n_cells, dm.n_genes, dm.n_clusters)
    module.eval()
    with torch.no_grad():
        out = module.model(dm.batch)
    y = dm.batch.y.numpy()
    e = torch.cat([out["e_m"], out["e_g"]], 1).numpy()
    z = torch.cat([out["z_m"], out["z_g"]], 1).numpy()
    assert rec["ari_e"] == pytest.approx(clustering_scores(y, kmeans(e, dm.n_clusters, 5))["ari"])
    assert rec["ari_z"] == pytest.approx(clustering_scores(y, kmeans(z, dm.n_clusters, 5))["ari"])
    assert "blobs_z" not in rec  # no coordinates in scRNA-seq data
    # the logged terms are the training step's (dropout on): same order of size as the eval-mode loss, all present
    terms = module.objective(out, dm.batch.cell_graph)
    assert set(terms) <= set(rec) and rec["grad_norm"] > 0 and np.isfinite(rec["loss"])


def test_main_writes_a_table_per_variant_and_bad_input_is_one_line(tmp_path, data_dir, capsys, monkeypatch):
    out = tmp_path / "dyn.md"
    assert dynamics.main(["dlpfc_151673", "--epochs", "2", "--every", "2", "--set", "hidden_dim=16",
                          "--variant", "published={}", "--variant", 'no_ndc={"alpha": 0}',
                          "--data-dir", str(data_dir), "--output", str(out)]) == 0
    text = out.read_text()
    assert "## published: {}" in text and '## no_ndc: {"alpha": 0}' in text
    rows = [line for line in text.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 4 and rows[2].split("|")[4].strip() == "—"  # no NDC term without alpha
    records = json.loads(out.with_suffix(".json").read_text())["variants"]
    assert [v["name"] for v in records] == ["published", "no_ndc"]
    assert all(-1 <= r["blobs_z"] <= 1 and -1 <= r["blobs_e"] <= 1 for v in records for r in v["records"])
    from scrcl.errors import run_entry

    capsys.readouterr()

    def trained(*args, **kwargs):
        raise AssertionError("a variant trained before every variant's settings were checked")

    monkeypatch.setattr(dynamics, "trace", trained)
    # a later variant's unknown key: refused before the first variant trains (it used to train it for minutes first)
    for args, fragment in ((["pbmc68k", "--variant", "x={bad"], "--variant"), (["pbmc68k", "--epochs", "0"], "--epochs"),
                           (["pbmc68k", "--variant", "a={}", "--variant", 'b={"lrr": 1}'], "unknown config key(s): lrr")):
        assert run_entry(dynamics.main, [*args, "--output", str(tmp_path / "bad.md")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0] and not (tmp_path / "bad.md").exists()
