"""Ablations: the variants file, each variant's train.py config, the grid of trials, the table, bad input.

Training is replaced by the fake trial function of test_sweep (it writes a run directory as train.py
does); the launcher's scheduling, resuming and failure handling are tested there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scrcl.experiments import ablate
from scrcl.experiments import launcher
from test_sweep import fake_train  # pytest puts this directory on sys.path (no __init__.py)

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {
    "full": {},
    "no_hea": {"hea_weight": 0.0},
    "no_ndc": {"alpha": 0.0},
    "no_cvc": {"beta": 0.0},
    "no_refine": {"refine": False},
    "mlp_only": {"views": "mlp"},
    "gnn_only": {"views": "gnn"},
    "identity_gene_graph": {"gene_graph": "identity"},
}


def cli(*args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "scrcl.experiments.ablate", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_every_variant_changes_what_it_says_and_nothing_else(tmp_path):
    variants = ablate.load_variants(ablate.DEFAULT_FILE)
    assert list(variants) == list(VARIANTS)
    trials = ablate.build_trials(variants, "pbmc10x", [5], [], tmp_path)
    full = launcher.trial_config(trials[0].args)
    assert (full["hea_weight"], full["refine"], full["views"], full["gene_graph"]) == (1.0, True, "both", "knn_symmetric")
    assert full["alpha"] > 0 and full["beta"] > 0
    for trial in trials:
        config = launcher.trial_config(trial.args)
        change = VARIANTS[trial.params["variant"]]
        assert {k: config[k] for k in change} == change, trial.name
        differ = {k for k in full if k not in ("run_name",) and config[k] != full[k]}
        assert differ == set(change), (trial.name, differ)
    assert ablate.variant_args({"refine": False}) == ["--no-refine"]
    assert ablate.variant_args({"refine": True, "views": "mlp", "hea_weight": 0}) == ["--refine", "--views=mlp", "--hea-weight=0"]


def test_variants_times_seeds_and_the_table(tmp_path):
    variants = ablate.select(ablate.load_variants(ablate.DEFAULT_FILE), "full,no_ndc")
    trials = ablate.build_trials(variants, "pbmc68k", [5, 15, 25], ["--epochs", "2"], tmp_path)
    assert [t.name for t in trials] == [f"{v}-seed{s}" for v in ("full", "no_ndc") for s in (5, 15, 25)]

    def scores(config):  # a known value per variant and seed, to check the aggregation
        ari = (0.6 if config["alpha"] > 0 else 0.3 + config["seed"] / 1000) + config["seed"] / 1000
        return {"acc": 0.7, "nmi": 0.6, "ari": ari, "f1": 0.5}

    outcome = launcher.run_trials(trials, tmp_path, launcher.make_slots(None, 2), group=tmp_path.name, log=lambda _: None,
                                  execute_fn=fake_train(scores=scores))
    assert outcome.ok and len(outcome.ran) == 6
    rows = ablate.results_rows(variants, trials)
    text = ablate.write_results(rows, tmp_path, dataset="pbmc68k", seeds=[5, 15, 25], file=ablate.DEFAULT_FILE,
                                command="test", outcome=outcome, conditions=launcher.conditions(trials))
    ari = np.array([0.605, 0.615, 0.625])
    no_ndc = np.array([0.31, 0.33, 0.35])
    from scrcl.eval.metrics import mean_std_text, paired_difference_text

    assert (f"| full | – | 3/3 | {mean_std_text([0.7] * 3)} | {mean_std_text([0.6] * 3)} | {mean_std_text(ari)} | "
            f"{mean_std_text([0.5] * 3)} | 5: 0.605, 15: 0.615, 25: 0.625 | – |") in text
    assert f"{ari.mean():.4f} ± {ari.std():.4f} [" in text
    assert (f"| no_ndc | alpha=0 | 3/3 | {mean_std_text([0.7] * 3)} | {mean_std_text([0.6] * 3)} | {mean_std_text(no_ndc)} "
            f"| {mean_std_text([0.5] * 3)} | 5: 0.310, 15: 0.330, 25: 0.350 | {paired_difference_text(no_ndc, ari)} |") in text
    assert f"{(no_ndc - ari).mean():+.3f} [" in text and "(3 seeds; beyond noise)" in text
    assert "0.999" not in text  # the fake's oracle_* figures never reach the table
    # precision from each run's config.yaml, device and threads from its metrics.json (the fake: 1 + seed % 2 threads)
    assert "\n- Precision 32-true; device cpu; torch threads 2 (each run's config.yaml and metrics.json).\n" in text
    csv = (tmp_path / "ablation.csv").read_text().splitlines()
    assert csv[0] == "variant,change,runs,trials,acc_mean,acc_std,nmi_mean,nmi_std,ari_mean,ari_std,f1_mean,f1_std"
    assert csv[2].startswith("no_ndc,alpha=0,3,3,0.700000,0.000000")


def test_main_runs_the_grid_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(launcher, "execute", fake_train(fail={"mlp_only-seed15"}))
    args = ["--dataset", "pbmc68k", "--seeds", "5,15", "--workers", "2", "--output", str(tmp_path), "--epochs", "2"]
    assert ablate.main(args) == 1
    out = capsys.readouterr().out
    assert "15 ran, 0 skipped (finished before), 1 failed" in out and "failed: mlp_only-seed15 (exit 1)" in out
    table = (tmp_path / "ablation.md").read_text()
    assert "| mlp_only | views=mlp | 1/2 (seed 5) |" in table
    assert "| 0.5000 | 5: 0.500 | +0.000 (1 seed) |" in table  # paired with full on the one seed both finished
    monkeypatch.setattr(launcher, "execute", fake_train())
    assert ablate.main(args) == 0
    assert "1 ran, 15 skipped (finished before), 0 failed" in capsys.readouterr().out
    assert "| mlp_only | views=mlp | 2/2 |" in (tmp_path / "ablation.md").read_text()


def test_report_writes_the_table_of_finished_trials_and_nothing_without_any(tmp_path, monkeypatch, capsys):
    proc = cli("--dataset", "pbmc68k", "--seeds", "5", "--output", tmp_path / "none", "--report")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --report: no trial has finished in {tmp_path / 'none'} yet; run the same command without --report"]
    assert not (tmp_path / "none").exists()
    args = ["--dataset", "pbmc68k", "--seeds", "5,15", "--output", str(tmp_path), "--epochs", "2"]
    monkeypatch.setattr(launcher, "execute", fake_train())
    assert ablate.main([*args, "--variants", "full,no_hea"]) == 0
    monkeypatch.setattr(launcher, "execute", lambda cmd, env, log_path: pytest.fail(f"--report ran {cmd}"))
    capsys.readouterr()
    assert ablate.main([*args, "--report"]) == 0
    assert "--report: 4 of 16 trials finished" in capsys.readouterr().out
    table = (tmp_path / "ablation.md").read_text()
    assert "trials finished: 4 of 16" in table and "| no_hea | hea_weight=0 | 2/2 |" in table
    assert "| no_ndc | alpha=0 | 0/2 | – |" in table and "--report" not in table


def test_dry_run_prints_every_command_and_runs_nothing(tmp_path):
    out = tmp_path / "abl"
    proc = cli("--dataset", "pbmc10x", "--seeds", "5,15", "--gpus", "0,1,2,3", "--dry-run", "--epochs", "100", "--output", out)
    assert proc.returncode == 0, proc.stderr
    commands = [line for line in proc.stdout.splitlines() if "-m scrcl.train" in line]
    assert len(commands) == 16 and "16 to run on GPU 0, GPU 1, GPU 2, GPU 3" in proc.stdout
    assert f"--dataset=pbmc10x --no-refine --epochs 100 --seed=15 --output={out} --run-name=no_refine-seed15" in proc.stdout
    assert "--gene-graph=identity" in proc.stdout and "--views=gnn" in proc.stdout
    assert not out.exists()


@pytest.mark.parametrize("args, text, message", [
    (["--alpha", "5"], None, "--alpha is what variant 'no_ndc' changes"),
    (["--variants", "full,no_such"], None, "unknown variant(s) no_such"),
    (["--seeds", "5,x"], None, "seeds must be integers"),
    (["--seeds", "5,-1"], None, "seeds must be in 0 … 4294967295 (numpy's range), got -1"),
    (["--gpus", "0", "--workers", "2"], None, "either --gpus"),
    (["--file", "configs/ablations/missing.yaml"], None, "does not exist"),
    (["--file", "FILE"], "variants:\n  bad:\n    set: {hea_wieght: 0}\n", "sets 'hea_wieght', which is not a method config key"),
    (["--file", "FILE"], "variants: [full]\n", "must hold 'variants:'"),
    (["--file", "FILE"], "variants: {a: {set: {views: cnn}}}\n", "views must be one of both, mlp, gnn"),
    (["--file", "FILE"], "variants: {a: {set: {refine: 0}}}\n", "'refine' takes true or false"),
])
def test_bad_input_is_one_line_and_exit_2(args, text, message, tmp_path):
    if text is not None:
        path = tmp_path / "variants.yaml"
        path.write_text(text)
        args = [str(path) if a == "FILE" else a for a in args]
    proc = cli("--dataset", "pbmc68k", *args, "--output", tmp_path / "out", "--dry-run")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_directory_given_as_a_yaml_file_is_one_user_error(tmp_path):
    from scrcl.train.config import read_yaml, resolve_config
    from scrcl.errors import UserError

    with pytest.raises(UserError, match="is a directory, not a file"):
        read_yaml(tmp_path, "ablation file")
    with pytest.raises(UserError, match=r"config file .* is a directory"):
        resolve_config(config_file=str(tmp_path))


def test_the_difference_to_full_pairs_seeds_and_skips_seeds_only_one_side_has():
    full = {"metrics": [{"seed": 5, "ari": 0.70}, {"seed": 15, "ari": 0.80}]}
    row = {"metrics": [{"seed": 15, "ari": 0.60}, {"seed": 25, "ari": 0.10}]}
    assert ablate.paired_difference(row, full) == "-0.200 (1 seed)"  # 15 only: 0.60 - 0.80
    both = {"metrics": [{"seed": 5, "ari": 0.75}, {"seed": 15, "ari": 0.70}]}
    assert ablate.paired_difference(both, full).startswith("-0.025 [")  # (0.05 - 0.10) / 2
    assert ablate.paired_difference(both, full).endswith("(2 seeds; within noise)")
    assert ablate.paired_difference({"metrics": [{"seed": 25, "ari": 0.1}]}, full) == "–"
    assert ablate.paired_difference(full, full) == "–" and ablate.paired_difference(row, None) == "–"
