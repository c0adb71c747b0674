"""scrcl.experiments.tables.method_rows: what the results tables show for scRCL's runs."""

from __future__ import annotations

import numpy as np
import pytest

from scrcl.experiments.tables import method_rows


def dataset_rows(scrcl_runs):
    baseline = {"pca_kmeans": {"ari": 0.4, "nmi": 0.5}, "leiden": {"ari": 0.3, "nmi": 0.4, "resolution": 1.0, "n_found": 3}}
    return [{"dataset": "toy", "scrcl": scrcl_runs, "baselines": [baseline] * len(scrcl_runs)}]


def run(seed, **metrics):
    return {"seed": seed, "n_cells": 100, "n_genes": 50, "n_clusters": 3, **metrics}


def test_a_final_epoch_run_is_one_scrcl_row():
    rows = method_rows(dataset_rows([run(5, ari=0.5, nmi=0.6, epoch=500), run(15, ari=0.7, nmi=0.8, epoch=500)]), ("ari", "nmi"))
    assert len(rows) == 3
    assert "scRCL (final epoch)" in rows[0] and "0.6000" in rows[0] and "epoch 500, 500" in rows[0]


def test_a_selected_evaluation_is_shown_with_the_final_epoch_beside_it():
    runs = [run(5, ari=0.8, nmi=0.8, epoch=120, selected_by="silhouette", final_epoch=500, final_ari=0.4, final_nmi=0.5),
            run(15, ari=0.6, nmi=0.6, epoch=90, selected_by="silhouette", final_epoch=500, final_ari=0.6, final_nmi=0.7)]
    rows = method_rows(dataset_rows(runs), ("ari", "nmi"))
    assert len(rows) == 4
    assert "scRCL (best silhouette, no labels)" in rows[0] and "0.7000" in rows[0] and "epoch 120, 90" in rows[0]
    assert "scRCL (final epoch)" in rows[1] and "0.5000" in rows[1] and "epoch 500, 500" in rows[1]
    assert "PCA(30) + k-means" in rows[2] and "Leiden" in rows[3]


def test_the_header_states_precision_device_and_threads_of_the_runs():
    from scrcl.experiments.tables import run_conditions

    results = dataset_rows([run(5, torch_threads=2, gpu_peak_memory_mb=None), run(15, torch_threads=1)])
    results[0]["config"] = {"precision": "bf16-mixed"}
    assert run_conditions(results) == ("- Precision bf16-mixed; device cpu; torch threads 1, 2 (the table's config and the "
                                       "runs' metrics.json).")
    from scrcl.train.results import conditions_text

    runs = [({"precision": "32-true"}, {"torch_threads": t, "gpu_peak_memory_mb": g}) for t, g in ((10, None), (2, 512.0), (None, None))]
    assert conditions_text(runs, "here") == "Precision 32-true; device cpu, gpu; torch threads 2, 10, None (here)."


def test_margins_pair_each_seed_with_its_own_baseline():
    """scRCL − baseline per seed, then Student's t over the differences: pairing removes what a seed shares (here the
    baseline moves with the seed as much as scRCL does, so unpaired means would call the difference noise)."""
    from scipy import stats

    from scrcl.experiments.tables import margin

    ours = [run(s, ari=a, nmi=0.5) for s, a in ((5, 0.50), (15, 0.70), (25, 0.61))]
    baselines = [{"pca_kmeans": {"ari": a - d, "nmi": 0.5}, "leiden": {"ari": a + 0.3, "nmi": 0.5}}
                 for a, d in ((0.50, 0.05), (0.70, 0.06), (0.61, 0.04))]
    result = {"dataset": "toy", "scrcl": ours, "baselines": baselines}
    diffs = [0.05, 0.06, 0.04]
    low, high = stats.t.interval(0.95, df=2, loc=sum(diffs) / 3, scale=stats.sem(diffs))
    assert margin(result, "pca_kmeans", "ari") == f"+0.050 [{low:+.3f}, {high:+.3f}] (3 seeds; beyond noise)"
    assert margin(result, "leiden", "ari").startswith("-0.300 [-0.300, -0.300] (3 seeds; beyond noise)")
    assert "within noise" in margin(result, "pca_kmeans", "nmi")  # no difference at all
    assert margin({"scrcl": ours[:1], "baselines": baselines[:1]}, "pca_kmeans", "ari") == "+0.050 (1 seed)"
    # scRCL's reported score against another key of the baseline (the spatial table's refined vs Leiden raw)
    result["baselines"] = [{**b, "leiden": {**b["leiden"], "ari_unrefined": 0.0}} for b in baselines]
    assert margin(result, "leiden", "ari_unrefined", ours_key="ari").startswith("+0.603 [")


def test_the_selection_section_pairs_reported_final_and_oracle_evaluations_of_the_same_run():
    """reported − final and oracle − reported, per run, then Student's t over the seeds; datasets whose runs report the
    final epoch (no ``select``) have no row, and a table of only those has no section."""
    from scipy import stats

    from scrcl.experiments.tables import selection_section

    selected = [run(s, ari=a, nmi=0.6, final_ari=a - d, final_nmi=0.6, oracle_ari=a + g, live_final_ari=a - 0.1,
                    epoch=100, final_epoch=500, selected_by="silhouette")
                for s, a, d, g in ((5, 0.50, 0.05, 0.10), (15, 0.70, 0.02, 0.00), (25, 0.61, 0.08, 0.02))]
    plain = [run(5, ari=0.4, nmi=0.5, oracle_ari=0.6)]
    results = [{**dataset_rows(selected)[0], "dataset": "toy"}, {**dataset_rows(plain)[0], "dataset": "plain"}]
    lines = selection_section(results, "dataset")
    rows = [line for line in lines if line.startswith("| toy |") or line.startswith("| plain |")]
    assert len(rows) == 1 and rows[0].startswith("| toy |")
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    diffs = [0.05, 0.02, 0.08]
    low, high = stats.t.interval(0.95, df=2, loc=0.05, scale=stats.sem(diffs))
    assert cells[1] == f"+0.050 [{low:+.3f}, {high:+.3f}] (3 seeds; {'beyond' if low > 0 else 'within'} noise)"
    assert cells[2].startswith("+0.000 [+0.000, +0.000]")
    assert cells[3].startswith("+0.100 [+0.100, +0.100] (3 seeds; beyond noise)")  # against the live weights' final epoch
    gaps = [0.10, 0.00, 0.02]
    low, high = stats.t.interval(0.95, df=2, loc=0.04, scale=stats.sem(gaps))
    assert cells[4] == f"+0.040 [{low:+.3f}, {high:+.3f}] (3 seeds; within noise)"
    assert selection_section(results[1:], "dataset") == []
    other = [run(s, ari=0.3, nmi=0.4, final_ari=0.2, final_nmi=0.5, oracle_ari=0.3, selected_by="silhouette") for s in (5, 15)]
    both = selection_section([results[0], {**dataset_rows(other)[0], "dataset": "other"}], "dataset")
    assert both[-1] == "| mean of the 2 datasets' means | +0.075 | -0.050 | +0.100 (1 of 2) | +0.020 |"  # (0.05 + 0.1) / 2, ...
    # the results table's rows: the live weights' final epoch beside the reported and final evaluations
    rows = method_rows([results[0]], ("ari",))
    assert len(rows) == 5 and "scRCL (final epoch, live weights: no averaging, as the reference trains)" in rows[2]
    assert f"{np.mean([0.40, 0.60, 0.51]):.4f} ± " in rows[2]


def test_live_final_reads_the_last_evaluation_of_the_live_weights(tmp_path):
    from scrcl.experiments.tables import live_final

    assert live_final(tmp_path) == {}  # no history.csv
    (tmp_path / "history.csv").write_text("epoch,ari,silhouette,live_ari,live_ari_unrefined,live_silhouette\n"
                                          "10,0.5,0.3,0.4,0.35,0.2\n20,0.6,0.4,0.45,0.42,0.25\n")
    assert live_final(tmp_path) == {"live_final_ari": 0.45, "live_final_ari_unrefined": 0.42}  # scores, not criteria
    assert live_final(tmp_path, final_epoch=20) == live_final(tmp_path)
    assert live_final(tmp_path, final_epoch=30) == {}  # the last evaluation is not the run's final epoch: nothing shown
    (tmp_path / "history.csv").write_text("epoch,ari,silhouette\n10,0.5,0.3\n")  # weights not averaged
    assert live_final(tmp_path) == {}


def test_a_half_done_run_of_another_seed_is_not_resumed_as_this_seed(tmp_path):
    import yaml

    from scrcl.errors import UserError
    from scrcl.experiments.tables import scrcl_run, table_config

    config = table_config("pbmc68k", 2, {}, None)
    run_dir = tmp_path / "pbmc68k" / "seed15"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "seed": 5}))  # seed 5 began here, was stopped
    with pytest.raises(UserError, match="holds a run of seed 5, not seed 15"):
        scrcl_run(config, run_dir, tmp_path, 15, keep_checkpoints=False)
    assert (run_dir / "checkpoints").exists()


def test_runs_made_at_another_precision_are_not_mixed_into_a_table(tmp_path):
    """paper_table.py read runs made in float32 into a bf16-mixed table, whose header then stated bf16-mixed."""
    import yaml

    from scrcl.errors import UserError
    from scrcl.experiments.tables import check_same_settings
    from scrcl.train.config import resolve_config

    config = resolve_config(dataset="pbmc68k", overrides={"epochs": 2})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    check_same_settings(tmp_path, config)
    with pytest.raises(UserError, match=r"other settings \(precision: '32-true' there, 'bf16-mixed' now\)"):
        check_same_settings(tmp_path, {**config, "precision": "bf16-mixed"})


def test_a_table_of_another_command_is_not_replaced_without_output(tmp_path):
    """The docstring's own smoke test (2 epochs, one dataset) replaced the committed RESULTS.md without a word."""
    from scrcl.errors import UserError
    from scrcl.experiments.tables import table_output

    committed = tmp_path / "RESULTS.md"
    assert table_output(None, committed, "python benchmarks/paper_table.py") == committed  # nothing there yet
    committed.write_text("# Results\n\n- Command: `python benchmarks/paper_table.py --seeds 5,15`\n")
    assert table_output(None, committed, "python benchmarks/paper_table.py --seeds 5,15") == committed  # the same table again
    assert table_output(None, committed, "python benchmarks/paper_table.py --seeds=5,15") == committed  # spelled otherwise
    with pytest.raises(UserError, match=r"holds the table of another command \(python benchmarks/paper_table.py --seeds "
                                        r"5,15\); give --output FILE for this one, or --output .*RESULTS.md to replace it"):
        table_output(None, committed, "python benchmarks/paper_table.py --datasets pbmc68k --epochs 2")
    assert table_output(committed, committed, "python benchmarks/paper_table.py --epochs 2") == committed  # asked for


def test_the_header_names_the_code_of_the_runs_it_reads():
    """A table reads runs made by earlier invocations, maybe by other code: it says which commits, from metrics.json."""
    from scrcl.experiments.tables import header_lines

    results = dataset_rows([run(5, code="abc1234"), run(15, code="abc1234"), run(25)])
    results[0]["config"] = {"precision": "32-true"}
    lines = header_lines(results, command="python benchmarks/paper_table.py", started="today", seconds=60.0)
    assert "- Code of the runs (metrics.json): abc1234 (2 runs), not recorded (1 run)" in lines
