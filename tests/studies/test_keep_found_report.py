"""studies/keep_found.py: which evaluation each label-free report picks, and its gap to the label-picked one, read
back from the runs' history.csv (histories written here by hand; the runs themselves are the study's)."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from scrcl.errors import run_entry
from studies import keep_found
from tests.stopping import sigterm_while_training


def write_run(root, schedule: str, seed: int, rows: list[dict]) -> None:
    run = keep_found.run_dir(root, "toy", schedule, seed)
    run.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(run / "history.csv", index=False)
    (run / "metrics.json").write_text(json.dumps({"seed": seed, "torch_threads": 2}))
    (run / "config.yaml").write_text(f"precision: 32-true\nselect: {'silhouette' if seed == 15 else 'final'}\n")


def history(aris, live_aris, silhouettes, live_silhouettes, chs):
    return [{"epoch": 10 * (i + 1), "ari": a, "nmi": a, "silhouette": s, "calinski_harabasz": c,
             "live_ari": la, "live_nmi": la, "live_silhouette": ls, "live_calinski_harabasz": c}
            for i, (a, la, s, ls, c) in enumerate(zip(aris, live_aris, silhouettes, live_silhouettes, chs))]


def test_each_report_picks_its_evaluation_and_the_gap_is_to_the_best_by_labels():
    rows = history(aris=[0.5, 0.9, 0.6], live_aris=[0.4, 0.7, 0.3], silhouettes=[0.2, 0.1, 0.3],
                   live_silhouettes=[0.5, 0.5, 0.1], chs=[5.0, 9.0, 1.0])
    frame = pd.DataFrame(rows)
    assert keep_found.pick(frame, "ema", "final") == {"epoch": 30, "ari": 0.6, "nmi": 0.6}
    assert keep_found.pick(frame, "ema", "silhouette")["epoch"] == 30
    assert keep_found.pick(frame, "live", "silhouette")["epoch"] == 10  # ties: the earlier evaluation
    assert keep_found.pick(frame, "ema", "calinski_harabasz")["ari"] == 0.9
    assert keep_found.oracle(frame, "ema") == 0.9 and keep_found.oracle(frame, "live") == 0.7


def test_report_tabulates_each_dataset_and_the_mean_over_datasets(tmp_path, monkeypatch):
    for seed, final in ((5, 0.6), (15, 0.8)):
        for schedule in keep_found.SCHEDULES:
            write_run(tmp_path, schedule, seed, history(aris=[0.9, final], live_aris=[0.5, final], silhouettes=[0.2, 0.1],
                                                        live_silhouettes=[0.1, 0.2], chs=[1.0, 2.0]))
    args = type("Args", (), {"runs": tmp_path, "command": "test", "config": "dataset", "precision": "bf16-mixed", "eval_every": 10})()
    monkeypatch.setattr(sys, "argv", ["keep_found.py"])
    text = keep_found.report(args)
    row = next(line for line in text.splitlines() if line.startswith("| constant | ema | final |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3].startswith("0.7000 ± 0.1000 [")  # final ARI 0.6 and 0.8
    assert cells[5] == f"{((0.9 - 0.6) + (0.9 - 0.8)) / 2:.4f}" and cells[6] == "20, 20"
    silhouette = next(line for line in text.splitlines() if line.startswith("| cosine | ema | silhouette |"))
    assert "| 10, 10 |" in silhouette and "0.9000 ± 0.0000" in silhouette
    assert "## toy (seeds 5, 15; the runs' metrics.json: select final, silhouette)" in text and "Mean over the 1 datasets" in text
    assert "- Precision 32-true, torch threads 2 (from the runs'" in text  # the runs' own, not the command line's
    assert "config.yaml and metrics.json); each dataset's own config (`--dataset NAME`" in text  # their config: no data file


def test_a_dataset_still_running_is_shown_but_not_in_the_mean_over_datasets(tmp_path, monkeypatch):
    for seed in (5, 15):
        for schedule in keep_found.SCHEDULES:
            write_run(tmp_path, schedule, seed, history(aris=[0.5, 0.5], live_aris=[0.5, 0.5], silhouettes=[0.2, 0.1],
                                                        live_silhouettes=[0.1, 0.2], chs=[1.0, 2.0]))
    partial = keep_found.run_dir(tmp_path, "late", "constant", 5)  # one schedule, one seed so far
    partial.mkdir(parents=True)
    pd.DataFrame(history(aris=[0.9, 0.9], live_aris=[0.9, 0.9], silhouettes=[0.2, 0.1], live_silhouettes=[0.1, 0.2],
                         chs=[1.0, 2.0])).to_csv(partial / "history.csv", index=False)
    (partial / "metrics.json").write_text(json.dumps({"seed": 5}))
    args = type("Args", (), {"runs": tmp_path, "command": "test", "config": "dataset", "precision": "32-true", "eval_every": 10})()
    monkeypatch.setattr(sys, "argv", ["keep_found.py"])
    text = keep_found.report(args)
    assert "## late (seeds 5; the runs' metrics.json: select not recorded; in progress, not in the mean" in text
    assert "Mean over the 1 datasets (toy)" in text
    mean_row = next(line for line in text.split("## Over the datasets")[1].splitlines() if line.startswith("| constant | live | final |"))
    assert "| 0.5000 |" in mean_row  # the partial dataset's 0.9 is not in it


def test_schedules_chooses_which_runs_are_made_and_a_wrong_one_is_one_line(tmp_path, monkeypatch, capsys):
    made = []
    monkeypatch.setattr(keep_found, "train", lambda args, dataset, schedule, seed: made.append((dataset, schedule, seed)) or 0)
    common = ["--datasets", "Pollen", "--seeds", "5,15", "--runs", str(tmp_path / "runs"), "--output", str(tmp_path / "out.md")]
    assert keep_found.main([*common, "--schedules", "constant"]) == 0
    assert made == [("pollen", "constant", 5), ("pollen", "constant", 15)]  # the registry's own name
    made.clear()
    assert keep_found.main(common) == 0  # both by default
    assert made == [("pollen", s, seed) for seed in (5, 15) for s in keep_found.SCHEDULES]
    made.clear()
    assert run_entry(keep_found.main, [*common, "--schedules", "constant,linear"]) == 2 and made == []
    err = capsys.readouterr().err.strip()
    assert "--schedules takes constant and/or cosine, got 'constant,linear'" in err and "\n" not in err
    # a wrong dataset name stops the study before its first run, in one line
    assert run_entry(keep_found.main, ["--datasets", "pollen,no_such_set", *common[2:]]) == 2 and made == []
    err = capsys.readouterr().err.strip()
    assert "no_such_set" in err and "\n" not in err


def test_a_run_that_fails_makes_the_study_exit_1_after_writing_the_table_of_the_others(tmp_path, monkeypatch, capsys):
    """A batch system must see that a run did not finish (the study used to exit 0 with the failure only in the log)."""
    monkeypatch.setattr(keep_found, "train", lambda args, dataset, schedule, seed: 1 if seed == 15 else 0)
    out = tmp_path / "out.md"
    args = ["--datasets", "pollen", "--seeds", "5,15", "--schedules", "constant", "--runs", str(tmp_path / "runs"), "--output", str(out)]
    assert keep_found.main(args) == 1
    assert out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["1 run(s) failed (pollen constant seed 15); their lines above say why, and the same command continues them"]


def test_constant_lr_section_takes_every_dataset_with_its_seeds_and_the_scrnaseq_sets_apart(tmp_path, monkeypatch):
    """Datasets run at constant lr only (pbmc10x, dlpfc_151673 in the study) or with fewer cosine seeds count in the
    constant-lr means on their constant-lr seeds; with a spatial set present, the scRNA-seq sets get their own mean;
    a run linked from elsewhere is named in its dataset's heading."""
    runs = tmp_path / "keep_found"

    def write(dataset, schedule, seed, final, where=None):
        run = keep_found.run_dir(runs, dataset, schedule, seed)
        target = where or run
        target.mkdir(parents=True)
        pd.DataFrame(history(aris=[0.9, final], live_aris=[0.9, final], silhouettes=[0.2, 0.1],
                             live_silhouettes=[0.2, 0.1], chs=[1.0, 2.0])).to_csv(target / "history.csv", index=False)
        (target / "metrics.json").write_text(json.dumps({"seed": seed}))
        if where is not None:
            run.parent.mkdir(parents=True, exist_ok=True)
            run.symlink_to(where)

    for seed, final in ((5, 0.4), (15, 0.6)):
        for schedule in keep_found.SCHEDULES:
            write("pbmc68k", schedule, seed, final)
        write("baron_mouse1", "constant", seed, final)
        write("pbmc10x", "constant", seed, final + 0.2, where=tmp_path / "paper_table" / "pbmc10x" / f"seed{seed}")
        write("dlpfc_151673", "constant", seed, final - 0.3)
    write("baron_mouse1", "cosine", 5, 0.4)  # one cosine seed: the constant-lr mean still takes both constant seeds
    write("pollen", "constant", 5, 0.1)  # fewer seeds than the others: not in the means
    args = type("Args", (), {"runs": runs, "command": "test", "config": "dataset", "precision": "32-true", "eval_every": 10})()
    monkeypatch.setattr(sys, "argv", ["keep_found.py"])
    text = keep_found.report(args)
    section = text.split("## Constant lr (the reference's schedule), over the datasets")[1].split("## ")[0]
    assert "all (baron_mouse1, dlpfc_151673, pbmc10x, pbmc68k)" in section
    assert "scRNA-seq sets alone (baron_mouse1, pbmc10x, pbmc68k)" in section
    row = next(line for line in section.splitlines() if line.startswith("| constant | ema | final |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    means = {"baron_mouse1": 0.5, "dlpfc_151673": 0.2, "pbmc10x": 0.7, "pbmc68k": 0.5}
    gaps = {d: 0.9 - m for d, m in means.items()}  # the best evaluation 0.9 each time; the mean gap is 0.9 − the mean
    sc = ("baron_mouse1", "pbmc10x", "pbmc68k")
    assert cells[3:9] == [f"{sum(means.values()) / 4:.4f}", "0.1000", f"{sum(gaps.values()) / 4:.4f}",
                          f"{sum(means[d] for d in sc) / 3:.4f}", "0.1000", f"{sum(gaps[d] for d in sc) / 3:.4f}"]
    assert "## pbmc10x (seeds 5, 15; the runs' metrics.json: select not recorded; constant lr only: in the constant-lr " \
           f"means, not in the two-schedule mean; runs linked from `{tmp_path.name}/paper_table/pbmc10x`)" in text
    assert "## pollen (seeds 5; the runs' metrics.json: select not recorded; in progress, not in the means" in text
    assert "Mean over the 1 datasets (pbmc68k)" in text  # the two-schedule mean keeps its own rule
    # a cosine schedule under way hides nothing: the constant-lr rows keep both seeds, the cosine rows show their one
    heading = ("## baron_mouse1 (constant lr seeds 5, 15; cosine lr seeds 5; the runs' metrics.json: select not recorded; "
               "cosine lr in progress: in the constant-lr means, not in the two-schedule mean)")
    assert heading in text
    rows = text.split(heading)[1].split("## ")[0].splitlines()
    assert next(r for r in rows if r.startswith("| constant | live | final |")).startswith("| constant | live | final | 0.5000 ± 0.1000")
    assert next(r for r in rows if r.startswith("| cosine | live | final |")).startswith("| cosine | live | final | 0.4000 |")


def test_the_two_schedule_mean_also_sets_the_scrnaseq_sets_apart(tmp_path, monkeypatch):
    """With a spatial set among the datasets that have both schedules, the mean over the datasets is given over all
    of them and over the scRNA-seq sets alone (the generic scRNA-seq config is chosen on those), as in the
    constant-lr section."""
    finals = {"pbmc68k": {"constant": 0.6, "cosine": 0.8}, "dlpfc_151673": {"constant": 0.2, "cosine": 0.4}}
    for dataset, by_schedule in finals.items():
        for schedule, final in by_schedule.items():
            for seed in (5, 15):
                run = keep_found.run_dir(tmp_path, dataset, schedule, seed)
                run.mkdir(parents=True)
                pd.DataFrame(history(aris=[0.9, final], live_aris=[0.9, final], silhouettes=[0.2, 0.1],
                                     live_silhouettes=[0.2, 0.1], chs=[1.0, 2.0])).to_csv(run / "history.csv", index=False)
                (run / "metrics.json").write_text(json.dumps({"seed": seed}))
    args = type("Args", (), {"runs": tmp_path, "command": "test", "config": "dataset", "precision": "32-true", "eval_every": 10})()
    monkeypatch.setattr(sys, "argv", ["keep_found.py"])
    section = keep_found.report(args).split("## Over the datasets")[1]
    assert "Mean over the 2 datasets (dlpfc_151673, pbmc68k)" in section
    assert "and over the scRNA-seq sets alone (pbmc68k)." in section
    assert "| lr | weights | report | mean ARI, all (2) | mean seed std | mean gap | mean ARI, scRNA-seq (1) |" in section
    row = next(line for line in section.splitlines() if line.startswith("| cosine | live | final |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:9] == ["0.6000", "0.0000", f"{0.9 - 0.6:.4f}", "0.8000", "0.0000", f"{0.9 - 0.8:.4f}"]


def test_config_generic_runs_the_local_h5ad_as_a_users_own_file(tmp_path, monkeypatch, capsys, data_dir):
    """--config generic: train.py gets the slice's .h5ad as --data FILE --task st --label-key K (so generic_st.yaml
    applies, which the published DLPFC slices never get; an absolute path, whatever folder the study started in), the
    runs and the table go to their own defaults, and the table's header says which config the runs had; a dataset with
    no local .h5ad stops the study before any run."""
    calls = []
    monkeypatch.setenv("SCRCL_DATA_DIR", str(data_dir))

    class Done:
        returncode, stdout, stderr, stopped_by = 0, "", "", None

    monkeypatch.setattr(keep_found, "ROOT", tmp_path)

    def fake_run(command, **popen):  # train.py's run, as the study starts it
        assert str(tmp_path / "train.py") in command
        calls.append(command)
        return Done()

    monkeypatch.setattr(keep_found, "run_child", fake_run)
    assert keep_found.main(["--config", "generic", "--datasets", "dlpfc_151673", "--seeds", "5", "--schedules", "cosine",
                            "--precision", "32-true"]) == 0
    (command,) = calls
    data = command[command.index("--data") + 1]
    assert data.endswith(".h5ad") and data.startswith(str(data_dir.resolve()))
    assert command[command.index("--task") + 1] == "st" and command[command.index("--label-key") + 1] == "layer_guess"
    assert "--dataset" not in command
    assert command[command.index("--output") + 1] == str(tmp_path / "runs" / "keep_found_generic" / "dlpfc_151673")
    header = (tmp_path / "studies" / "results" / "keep_found_generic.md").read_text()
    assert "each dataset's local .h5ad run as a user's own file (`--config generic`" in header
    calls.clear()
    # with a relative data directory the run still gets an absolute path (train.py runs in the repository's folder)
    monkeypatch.chdir(data_dir.resolve().parent)
    monkeypatch.setenv("SCRCL_DATA_DIR", data_dir.resolve().name)
    assert keep_found.main(["--config", "generic", "--datasets", "dlpfc_151673", "--seeds", "15", "--schedules", "cosine"]) == 0
    assert calls[-1][calls[-1].index("--data") + 1] == data
    calls.clear()
    assert run_entry(keep_found.main, ["--config", "generic", "--datasets", "dlpfc_151673,pbmc68k", "--seeds", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert calls == [] and "'pbmc68k' has none here" in err and "\n" not in err
    # the default config keeps its own folders
    assert keep_found.main(["--datasets", "dlpfc_151673", "--seeds", "5", "--schedules", "cosine"]) == 0
    assert calls[-1][calls[-1].index("--dataset") + 1] == "dlpfc_151673"
    assert calls[-1][calls[-1].index("--output") + 1] == str(tmp_path / "runs" / "keep_found" / "dlpfc_151673")
    assert (tmp_path / "studies" / "results" / "keep_found.md").exists()


def test_the_header_names_the_config_the_runs_had_not_the_flag(tmp_path, monkeypatch):
    """Runs made from a data file (--config generic) are described as such even by a report drawn without the flag."""
    for seed in (5, 15):
        write_run(tmp_path, "constant", seed, history(aris=[0.5, 0.6], live_aris=[0.5, 0.6], silhouettes=[0.2, 0.1],
                                                        live_silhouettes=[0.1, 0.2], chs=[1.0, 2.0]))
        config = keep_found.run_dir(tmp_path, "toy", "constant", seed) / "config.yaml"
        config.write_text(config.read_text() + "data: /somewhere/toy.h5ad\n")
    args = type("Args", (), {"runs": tmp_path, "command": "test", "config": "dataset", "precision": "32-true", "eval_every": 10})()
    monkeypatch.setattr(sys, "argv", ["keep_found.py"])
    text = keep_found.report(args)
    assert "metrics.json); each dataset's local .h5ad run as a user's own file (`--config generic`" in text
    assert "`--dataset NAME`" not in text


@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="finds a leftover process through /proc (Linux)")
def test_sigterm_stops_the_study_and_its_run(tmp_path, data_dir):
    """A SIGTERM to the study (kill, timeout, a batch system) stops its running train.py too, which keeps a checkpoint;
    the study exits 143 with one line. Before, the study died at once and its run trained on, orphaned."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(keep_found.__file__).resolve().parents[1]
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, str(root / "studies" / "keep_found.py"), "--datasets", "pollen", "--seeds", "5",
                             "--schedules", "constant", "--epochs", "100000", "--eval-every", "1", "--precision", "32-true",
                             "--runs", str(runs), "--output", str(tmp_path / "table.md")],
                            cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
                                               "SCRCL_DATA_DIR": str(data_dir)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr, left = sigterm_while_training(
        proc, lambda: bool(list(runs.glob("**/history.csv")) or list(runs.glob("**/csv/**/metrics.csv"))), str(runs), "run")
    assert proc.returncode == 143, stderr[-2000:]
    assert not left, "a run outlived its study"
    assert stderr.strip().splitlines()[-1].startswith("interrupted (SIGTERM) during pollen constant seed 5; run the same command")
    assert list(runs.glob("**/checkpoints/last.ckpt"))

