"""Sweeps: the W&B files, their offline expansion, the trial launcher's scheduling, resuming and failures.

The launcher's unit tests replace train.py by a fake trial function (``fake_train``) that writes a
run directory the way train.py does (config.yaml, metrics.json), so they run in well under a second;
the one end-to-end test (slow) trains the real model through ``python -m scrcl.experiments.sweep``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from scrcl.experiments import launcher
from scrcl.experiments import sweep
from scrcl.errors import UserError
from tests.stopping import sigterm_while_training

ROOT = Path(__file__).resolve().parents[2]
SWEEPS = ROOT / "configs" / "sweeps"
EXPECTED = {
    "hvg.yaml": {"hvg": [500, 1000, 1500, 2000, 3000]},
    "alpha_beta.yaml": {"alpha": [0.01, 0.1, 1, 10, 100], "beta": [0.01, 0.1, 1, 10, 100]},
    "k.yaml": {"k": [5, 10, 15, 20, 25, 30]},
}


def fake_train(scores=None, fail=(), sleep=0.0, calls=None):
    """A stand-in for ``execute``: writes the run directory train.py would write for this command line
    (its resolved config.yaml and a metrics.json with ``scores(config)``), or fails for trials in ``fail``."""
    lock = threading.Lock()

    def execute(cmd, env, log_path):
        config = launcher.trial_config(cmd[cmd.index("scrcl.train") + 1:])
        name = config["run_name"]
        start = time.monotonic()
        time.sleep(sleep)
        if calls is not None:
            with lock:
                calls.append({"name": name, "gpu": env.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.monotonic(),
                              "wandb_mode": env.get("WANDB_MODE"), "group": env.get("WANDB_RUN_GROUP")})
        log_path.parent.mkdir(parents=True, exist_ok=True)
        run_dir = Path(config["output"]) / name
        if run_dir.exists() and any(run_dir.iterdir()):  # as scrcl.train.run.run refuses to overwrite a run
            log_path.write_text(f"error: run directory {run_dir} exists already\n")
            return 2
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        if name in fail:
            log_path.write_text("Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
            return 1
        values = scores(config) if scores else {k: 0.5 for k in launcher.SCORES}
        metrics = {**values, "oracle_ari": 0.999, "oracle_nmi": 0.999, "seed": config["seed"], "epoch": config["epochs"],
                   "n_genes": min(config["hvg"], 765), "torch_threads": 1 + config["seed"] % 2,
                   "gpu_peak_memory_mb": 10.0 if env.get("CUDA_VISIBLE_DEVICES") else None}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        log_path.write_text("ACC {acc:.4f} NMI {nmi:.4f} ARI {ari:.4f} F1 {f1:.4f}\n".format(**values))
        return 0

    return execute


def cli(*args, cwd=ROOT, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "scrcl.experiments.sweep", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def k_trials(tmp_path, n=4, dataset="pbmc68k"):
    spec = sweep.load_sweep(SWEEPS / "k.yaml")
    settings = sweep.with_dataset_and_seeds(spec, sweep.expand(spec)[:n], dataset, None, {})
    return sweep.build_trials(spec, settings, ["--epochs", "2"], tmp_path)


# -- the files ------------------------------------------------------------------------------------
@pytest.mark.parametrize("file", sorted(EXPECTED))
def test_each_sweep_file_expands_to_its_grid(file):
    spec = sweep.load_sweep(SWEEPS / file)
    assert spec["method"] == "grid" and spec["program"] == "train.py"
    assert spec["metric"] == {"name": "val/ari", "goal": "maximize"}
    assert "analysis" in (SWEEPS / file).read_text()  # the file says labels score, not choose
    settings = sweep.expand(spec)
    axes = EXPECTED[file]
    assert len(settings) == int(np.prod([len(v) for v in axes.values()]))
    assert [tuple(s[k] for k in axes) for s in settings] == list(itertools.product(*axes.values()))
    assert all(s["dataset"] == "pbmc68k" for s in settings)
    assert sweep.swept(settings) == list(axes)


@pytest.mark.parametrize("file", sorted(EXPECTED))
def test_offline_command_is_what_a_wandb_agent_runs(file, tmp_path):
    """The trial's train.py arguments are the file's command with ${args} expanded by W&B's own code."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    spec = sweep.load_sweep(SWEEPS / file)
    settings = sweep.expand(spec)
    trials = sweep.build_trials(spec, settings, [], tmp_path)
    for setting, trial in zip(settings, trials):
        macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in setting.items()}})
        agent = []
        for item in create_sweep_command(spec["command"]):
            agent += macros["args"] if item == "${args}" else [item]
        after_program = agent[agent.index("${program}") + 1:]
        assert list(trial.args) == after_program + [f"--output={tmp_path}", f"--run-name={trial.name}"]
        config = launcher.trial_config(trial.args)  # train.py's parser takes every flag as the agent writes it
        for key, value in setting.items():
            assert config[key] == value


def test_run_cap_and_probabilities_as_wandb_reads_them(tmp_path):
    """run_cap 0 is no cap and 10.0 is 10 (W&B's reading); probabilities that sum to 1 only to 7 digits are drawn from
    (numpy alone wants ~1e-8 and raised its ValueError from the draw)."""
    path = tmp_path / "s.yaml"
    grid = {"method": "grid", "parameters": {"hvg": {"values": [500, 1000, 1500]}}}
    for cap, n in ((0, 3), (2.0, 2)):
        path.write_text(yaml.safe_dump({**grid, "run_cap": cap}))
        assert len(sweep.expand(sweep.load_sweep(path))) == n
    path.write_text(yaml.safe_dump({"method": "random", "run_cap": 30,
                                    "parameters": {"hvg": {"values": [500, 1000, 1500], "probabilities": [0.3333333] * 3}}}))
    drawn = [s["hvg"] for s in sweep.expand(sweep.load_sweep(path), seed=1)]
    assert len(drawn) == 30 and set(drawn) == {500, 1000, 1500}


def test_random_method_is_deterministic_for_a_seed(tmp_path):
    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump({
        "program": "train.py", "method": "random", "run_cap": 7, "metric": {"name": "val/nmi", "goal": "maximize"},
        "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2},
                       "k": {"min": 5, "max": 30}, "tau": {"min": 0.05, "max": 1.0},
                       "views": {"values": ["both", "mlp", "gnn"]}, "dataset": {"value": "pbmc68k"}}}))
    spec = sweep.load_sweep(path)
    first, again, other = sweep.expand(spec, seed=3), sweep.expand(spec, seed=3), sweep.expand(spec, seed=4)
    assert first == again and first != other
    assert len(first) == 7 and len(sweep.expand(spec, count=3, seed=3)) == 3
    for s in first:
        assert 1e-5 <= s["lr"] <= 1e-2 and isinstance(s["k"], int) and 5 <= s["k"] <= 30 and 0.05 <= s["tau"] <= 1.0
        assert s["views"] in ("both", "mlp", "gnn") and s["dataset"] == "pbmc68k"
    assert sweep.distribution(spec["parameters"]["k"]) == "int_uniform"
    assert sweep.distribution(spec["parameters"]["tau"]) == "uniform"
    spec.pop("run_cap")
    with pytest.raises(UserError, match="--count N, or run_cap"):
        sweep.expand(spec)


def test_seeds_repeat_every_setting_and_pool_in_the_table(tmp_path):
    spec = sweep.load_sweep(SWEEPS / "hvg.yaml")
    settings = sweep.with_dataset_and_seeds(spec, sweep.expand(spec), "pbmc10x", [5, 15], {})
    trials = sweep.build_trials(spec, settings, [], tmp_path)
    assert [t.name for t in trials[:3]] == ["hvg=500_seed=5", "hvg=500_seed=15", "hvg=1000_seed=5"]
    assert all("--dataset=pbmc10x" in t.args for t in trials) and len(trials) == 10
    execute = fake_train(scores=lambda c: {"acc": c["hvg"] / 10_000 + c["seed"] / 1000, "nmi": 0.5, "ari": 0.4, "f1": 0.3})
    outcome = launcher.run_trials(trials, tmp_path, launcher.make_slots(None, 2), group=tmp_path.name, log=lambda _: None,
                                  execute_fn=execute)
    assert outcome.ok and len(outcome.ran) == 10
    rows = sweep.group_rows(trials)
    assert [r["values"] for r in rows] == [{"hvg": h} for h in (500, 1000, 1500, 2000, 3000)]
    mean, std, values = rows[0]["scores"]["acc"]
    assert values == pytest.approx([0.05 + 0.005, 0.05 + 0.015])
    assert mean == pytest.approx(np.mean([0.05 + 0.005, 0.05 + 0.015])) and std == pytest.approx(0.005)
    text, figure = sweep.write_results(trials, spec, file=SWEEPS / "hvg.yaml", dataset="pbmc10x", out_dir=tmp_path,
                                       command="test", outcome=outcome)
    assert "| 500 | 2/2 | 500 | 0.0600 ± 0.0050 [" in text and "0.999" not in text  # never the oracle figures
    # the sweep's metric (ARI) is 0.4 everywhere: the first setting is "best", every other one is +0.000 within noise
    assert text.count("| best |") == 1 and text.count("+0.000 [+0.000, +0.000] (2 seeds; within noise)") == 4
    assert figure == tmp_path / "sweep.png" and figure.stat().st_size > 10_000
    # the runs' precision (config.yaml), device and threads (metrics.json): seeds 5 and 15 both ran at 2 threads here
    assert ("- Precision 32-true; device cpu; torch threads 2 (each run's config.yaml and metrics.json)." in text)
    csv = (tmp_path / "sweep.csv").read_text().splitlines()
    assert csv[0].startswith("hvg,runs,trials,genes,acc_mean,acc_std") and len(csv) == 6


def test_two_parameters_give_a_heatmap(tmp_path):
    spec = sweep.load_sweep(SWEEPS / "alpha_beta.yaml")
    trials = sweep.build_trials(spec, sweep.expand(spec), [], tmp_path)
    execute = fake_train(scores=lambda c: {"acc": 0.5, "nmi": 0.5, "ari": np.log10(c["alpha"]) / 10 + 0.5, "f1": 0.5})
    outcome = launcher.run_trials(trials, tmp_path, [launcher.Slot("test")], group="g", log=lambda _: None, execute_fn=execute)
    text, figure = sweep.write_results(trials, spec, file=SWEEPS / "alpha_beta.yaml", dataset="pbmc68k", out_dir=tmp_path,
                                       command="test", outcome=outcome)
    assert figure is not None and figure.stat().st_size > 10_000
    assert text.count("\n| ") == 26  # header + 25 settings
    assert "| 100 | 0.01 | 1/1 |" in text and "**0.7000**" in text


# -- dry run and the command line -----------------------------------------------------------------
def test_dry_run_prints_the_commands_and_runs_nothing(tmp_path):
    out = tmp_path / "sweep"
    proc = cli(SWEEPS / "k.yaml", "--dataset", "pbmc10x", "--dry-run", "--epochs", "5", "--hidden-dim", "64",
               "--gpus", "0,1", "--output", out)
    assert proc.returncode == 0, proc.stderr
    commands = [line for line in proc.stdout.splitlines() if "-m scrcl.train" in line]
    assert len(commands) == 18  # three seeds per setting unless --seeds says otherwise
    for (k, seed), line in zip([(k, s) for k in (5, 10, 15, 20, 25, 30) for s in (5, 15, 25)], commands):
        assert f"--dataset=pbmc10x --k={k} --seed={seed} --epochs 5 --hidden-dim 64 --output={out} --run-name=k={k}_seed={seed}" in line
    assert "18 to run on GPU 0, GPU 1" in proc.stdout
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["configs/sweeps/missing.yaml"], "does not exist"),
    (["BAD_YAML"], "is not valid YAML"),
    (["UNKNOWN_PARAM"], "unknown parameter 'hidden_dim'"),
    (["configs/sweeps/hvg.yaml", "--gpus", "0,1", "--workers", "2"], "either --gpus"),
    (["configs/sweeps/hvg.yaml", "--gpus", "0,,1"], "--gpus takes device ids"),
    (["configs/sweeps/hvg.yaml", "--gpus", "-1"], "--gpus takes device ids like 0,1,2,3 (or GPU-… / MIG-… UUIDs), got '-1'"),
    (["configs/sweeps/hvg.yaml", "--gpus", "0,abc"], "got 'abc'"),
    (["configs/sweeps/hvg.yaml", "--workers", "0"], "--workers must be at least 1"),
    (["configs/sweeps/hvg.yaml", "--hiden-dim", "5"], "unrecognized arguments: --hiden-dim"),
    (["configs/sweeps/hvg.yaml", "--hvg", "700"], "--hvg is a parameter of the sweep file"),
    (["configs/sweeps/hvg.yaml", "--run-name", "x"], "--run-name is set by the launcher"),
    (["configs/sweeps/hvg.yaml", "--dataset", "nosuchdata"], "unknown dataset 'nosuchdata'"),
    (["configs/sweeps/hvg.yaml", "--epochs", "0"], "epochs must be at least 1"),
    (["configs/sweeps/k.yaml", "--count", "3"], "--count is for method random"),
    (["BAYES"], "method must be grid or random offline"),
    (["MIN_ABOVE_MAX"], "min 0.01 is above max 0.0001"),
    (["TEXT_BOUND"], "max must be a finite number, got 'big'"),
    (["RUN_CAP_TEXT"], "run_cap must be a whole number of runs (0: no cap), got 'two'"),
    (["RUN_CAP_NEGATIVE"], "run_cap must be a whole number of runs (0: no cap), got -1"),
    (["configs/sweeps/hvg.yaml", "--count", "0"], "argument --count: must be at least 1, got 0"),
    (["configs/sweeps/hvg.yaml", "--sample-seed", "-1"], "argument --sample-seed: must be at least 0, got -1"),
    (["PROBABILITIES"], "probabilities must be 2 numbers ≥ 0 (one per value) that sum to 1, got [0.5, 0.7]"),
    (["NOT_TEXT"], "is not a text file (not UTF-8)"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    files = {
        "BAD_YAML": "method: grid\nparameters: {hvg: [500\n",
        "UNKNOWN_PARAM": "method: grid\nparameters:\n  hidden_dim:\n    values: [32, 64]\n",
        "BAYES": "method: bayes\nparameters:\n  hvg:\n    values: [500]\n",
        "MIN_ABOVE_MAX": "method: random\nparameters:\n  lr:\n    distribution: log_uniform_values\n    min: 0.01\n    max: 0.0001\n",
        "TEXT_BOUND": "method: random\nparameters:\n  lr:\n    min: 0.0001\n    max: big\n",
        "RUN_CAP_TEXT": "method: grid\nrun_cap: two\nparameters:\n  hvg:\n    values: [500]\n",
        "RUN_CAP_NEGATIVE": "method: grid\nrun_cap: -1\nparameters:\n  hvg:\n    values: [500]\n",
        "PROBABILITIES": "method: random\nrun_cap: 2\nparameters:\n  hvg:\n    values: [500, 1000]\n    probabilities: [0.5, 0.7]\n",
        "NOT_TEXT": b"\x00\x01\xff\xfe",
    }
    if args[0] in files:
        path = tmp_path / f"{args[0].lower()}.yaml"
        content = files[args[0]]
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        args = [path, *args[1:]]
    proc = cli(*args, "--output", tmp_path / "out", "--dry-run")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


# -- scheduling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["scrcl.experiments.sweep", "scrcl.experiments.ablate"])
def test_an_output_that_is_a_file_is_one_line_before_anything_runs(module, tmp_path):
    """It was a FileExistsError traceback after the plan was printed."""
    blocker = tmp_path / "afile"
    blocker.write_text("mine\n")
    first = [str(SWEEPS / "hvg.yaml")] if module.endswith("sweep") else []
    for output in (blocker, blocker / "batch"):
        proc = subprocess.run([sys.executable, "-m", module, *first, "--dataset", "pbmc68k", "--seeds", "5", "--output", str(output)],
                              cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines() == [f"error: --output {output}: {blocker} is a file, not a directory; give a "
                                                    "directory for the batch"]
    assert blocker.read_text() == "mine\n"


def test_gpus_that_this_machine_lacks_are_refused_before_the_batch_starts(tmp_path):
    trials = k_trials(tmp_path, n=2)
    slots = launcher.make_slots("0,3", None, env={})
    with pytest.raises(UserError, match="--gpus 0,3: torch sees no CUDA GPU on this machine; .* --workers N"):
        launcher.check_trials_can_run(trials, slots, env={}, cuda_devices=0)
    with pytest.raises(UserError, match=r"--gpus 0,3: there is no GPU 3; torch sees 2 \(ids 0 … 1\)"):
        launcher.check_trials_can_run(trials, slots, env={}, cuda_devices=2)
    launcher.check_trials_can_run(trials, slots, env={}, cuda_devices=4)
    # ids under a CUDA_VISIBLE_DEVICES already set (a scheduler's) are not the ones this process counts
    launcher.check_trials_can_run(trials, slots, env={"CUDA_VISIBLE_DEVICES": "2,3"}, cuda_devices=2)
    gpu_trials = sweep.build_trials(sweep.load_sweep(SWEEPS / "k.yaml"), [{"dataset": "pbmc68k", "k": 5, "seed": 5}],
                                    ["--accelerator", "gpu"], tmp_path)
    launcher.check_trials_can_run(gpu_trials, slots, env={}, cuda_devices=4)  # each trial sees its GPU
    with pytest.raises(UserError, match="--accelerator gpu with --workers: CPU workers see no GPU"):
        launcher.check_trials_can_run(gpu_trials, launcher.make_slots(None, 2, env={}), env={}, cuda_devices=4)
    for trial in trials:  # a finished batch runs nothing: its table can be rebuilt on a machine without its GPUs
        trial.run_dir.mkdir(parents=True)
        (trial.run_dir / "metrics.json").write_text("{}")
    launcher.check_trials_can_run(trials, slots, env={}, cuda_devices=0)
    uuids = "GPU-8f3a2c1e-0b6d-4e55-9a1f-2d3c4b5a6e7f,MIG-GPU-8f3a2c1e-0b6d-4e55-9a1f-2d3c4b5a6e7f/1/0"
    assert launcher.parse_gpus(uuids) == uuids.split(",")


@pytest.mark.parametrize("flags, message", [
    (["--workers", "1", "--precision", "16-mixed"], "--precision 16-mixed (float16) needs a GPU"),
    (["--workers", "1", "--accelerator", "gpu"], "--accelerator gpu with --workers"),
])
def test_a_setting_no_trial_can_run_is_refused_before_any_trial_starts(tmp_path, flags, message):
    """Not one failed trial after another and a results table of failures: one line, exit 2, nothing written."""
    out = tmp_path / "sweep"
    proc = cli(SWEEPS / "hvg.yaml", "--dataset", "pbmc68k", "--seeds", "5", "--epochs", "1", "--hidden-dim", "8",
               *flags, "--output", out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {message}" + proc.stderr.strip().split(message, 1)[1]]
    assert not out.exists()


def test_gpus_each_trial_gets_one_gpu_and_no_two_running_trials_share_one(tmp_path):
    calls = []
    trials = k_trials(tmp_path, n=4)
    slots = launcher.make_slots("0,1", None, env={})
    outcome = launcher.run_trials(trials, tmp_path, slots, group="k-pbmc68k", log=lambda _: None,
                                  execute_fn=fake_train(sleep=0.3, calls=calls))
    assert outcome.ok and len(outcome.ran) == 4 and len(calls) == 4
    assert {c["gpu"] for c in calls} == {"0", "1"}
    for gpu in ("0", "1"):
        spans = sorted((c["start"], c["end"]) for c in calls if c["gpu"] == gpu)
        assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans
    on0, on1 = [c for c in calls if c["gpu"] == "0"], [c for c in calls if c["gpu"] == "1"]
    assert any(a["start"] < b["end"] and b["start"] < a["end"] for a in on0 for b in on1)  # the two GPUs ran side by side
    assert all(c["group"] == "k-pbmc68k" for c in calls)


def test_pool_runs_at_most_one_item_per_slot():
    slots = [launcher.Slot(f"GPU {g}", {"CUDA_VISIBLE_DEVICES": g}) for g in ("3", "5", "7")]
    busy, peak, lock = {}, [0], threading.Lock()

    def work(item, slot):
        gpu = slot.env["CUDA_VISIBLE_DEVICES"]
        with lock:
            assert gpu not in busy, f"{gpu} given to {item} while {busy.get(gpu)} runs"
            busy[gpu] = item
            peak[0] = max(peak[0], len(busy))
        time.sleep(0.02 * (item % 3 + 1))
        with lock:
            del busy[gpu]
        return item, gpu

    results = launcher.run_pool(list(range(12)), slots, work)
    assert [r[0] for r in results] == list(range(12)) and {r[1] for r in results} == {"3", "5", "7"}
    assert peak[0] == 3


def test_cpu_workers_hide_the_gpus_and_share_the_cores():
    slots = launcher.make_slots(None, 2, env={})
    assert [s.label for s in slots] == ["CPU worker 1", "CPU worker 2"]
    assert all(s.env["CUDA_VISIBLE_DEVICES"] == "" and int(s.env["OMP_NUM_THREADS"]) >= 1 for s in slots)
    assert "OMP_NUM_THREADS" not in launcher.make_slots(None, 2, env={"OMP_NUM_THREADS": "1"})[0].env
    assert launcher.make_slots(None, None)[0].env == {}
    env = launcher.trial_env(slots[0], "hvg-pbmc68k", project="scrcl", base={"PATH": "/bin"})
    assert env["WANDB_MODE"] == "offline" and env["WANDB_RUN_GROUP"] == "hvg-pbmc68k" and env["WANDB_PROJECT"] == "scrcl"
    assert launcher.trial_env(slots[0], "g", base={"WANDB_MODE": "online"})["WANDB_MODE"] == "online"


def test_real_subprocess_gets_its_gpu_and_writes_its_log(tmp_path):
    """``execute`` itself, with a tiny command instead of train.py."""
    env = launcher.trial_env(launcher.Slot("GPU 2", {"CUDA_VISIBLE_DEVICES": "2"}), "g", base=dict(os.environ))
    log_path = tmp_path / "logs" / "t.log"
    code = "import os, sys; print('device', os.environ['CUDA_VISIBLE_DEVICES'], os.environ['WANDB_RUN_GROUP']); sys.exit(3)"
    assert launcher.execute([sys.executable, "-c", code], env, log_path) == 3
    assert launcher.last_line(log_path) == "device 2 g"


# -- resuming and failures ------------------------------------------------------------------------
def test_finished_trials_are_skipped_and_other_settings_refused(tmp_path):
    calls = []
    trials = k_trials(tmp_path, n=3)
    slots = [launcher.Slot("test")]
    first = launcher.run_trials(trials, tmp_path, slots, group="g", log=lambda _: None, execute_fn=fake_train(calls=calls))
    assert len(first.ran) == 3 and len(calls) == 3
    again = launcher.run_trials(trials, tmp_path, slots, group="g", log=lambda _: None, execute_fn=fake_train(calls=calls))
    assert len(again.ran) == 0 and len(again.skipped) == 3 and len(calls) == 3
    spec = sweep.load_sweep(SWEEPS / "k.yaml")
    other = sweep.build_trials(spec, sweep.expand(spec)[:3], ["--epochs", "3"], tmp_path)
    with pytest.raises(UserError, match="epochs: 2 there, 3 now"):
        launcher.run_trials(other, tmp_path, slots, group="g", log=lambda _: None, execute_fn=fake_train(calls=calls))
    assert len(calls) == 3


def test_a_trial_finished_by_another_launcher_after_the_plan_is_left_alone(tmp_path):
    """Two launchers on one batch: the first plans k=5 and k=10 as new; while it runs k=5, a second
    launcher finishes k=10. The first must neither clear k=10's run directory nor run it again."""
    spec = sweep.load_sweep(SWEEPS / "k.yaml")
    trials = sweep.build_trials(spec, sweep.expand(spec)[:2], [], tmp_path)
    other = fake_train()
    calls = []

    def execute(cmd, env, log_path):
        calls.append(launcher.trial_config(cmd[3:])["run_name"])
        if len(calls) == 1:  # meanwhile, elsewhere
            other([sys.executable, "-m", "scrcl.train", *trials[1].args], env, log_path.parent / "other.log")
        return fake_train()(cmd, env, log_path)

    outcome = launcher.run_trials(trials, tmp_path, [launcher.Slot("test")], group="g", log=lambda _: None, execute_fn=execute)
    assert calls == [trials[0].name] and outcome.ok
    assert outcome.ran == [trials[0]] and outcome.left_alone == [trials[1]]
    assert (trials[1].run_dir / "metrics.json").exists()


def _dead_pid() -> str:
    return subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()


def test_a_trial_locked_by_a_live_launcher_is_left_alone_and_a_stale_lock_is_taken(tmp_path):
    """A lock holds host and pid: a live launcher's is respected, one of this host whose process has exited is taken
    over, and one of another host is never taken over (its pid means nothing here)."""
    import socket

    spec = sweep.load_sweep(SWEEPS / "k.yaml")
    trials = sweep.build_trials(spec, sweep.expand(spec)[:3], [], tmp_path)
    (tmp_path / "logs").mkdir()
    host = socket.gethostname()
    (tmp_path / "logs" / f"{trials[0].name}.lock").write_text(f"{host} {os.getpid()}\n")  # alive: this process
    (tmp_path / "logs" / f"{trials[1].name}.lock").write_text(f"{host} {_dead_pid()}\n")  # its process has exited
    (tmp_path / "logs" / f"{trials[2].name}.lock").write_text(f"another-machine {os.getpid()}\n")  # a pid of elsewhere
    lines = []
    outcome = launcher.run_trials(trials, tmp_path, [launcher.Slot("test")], group="g", log=lines.append,
                                  execute_fn=fake_train())
    assert outcome.left_alone == [trials[0], trials[2]] and outcome.ran == [trials[1]]
    assert not (trials[0].run_dir / "metrics.json").exists() and (trials[1].run_dir / "metrics.json").exists()
    assert any("another launcher is running it (pid" in line and f"on {host}" in line for line in lines)
    assert any("another launcher is running it (pid" in line and "on another-machine" in line for line in lines)
    assert not (tmp_path / "logs" / f"{trials[1].name}.lock").exists()  # released when the trial ended
    assert (tmp_path / "logs" / f"{trials[2].name}.lock").exists()  # never taken over
    launcher.report(outcome, log=lines.append)
    assert lines[-1] == "1 ran, 0 skipped (finished before), 0 failed, 2 left to another launcher"


def test_a_trial_directory_is_cleared_only_when_its_owner_is_gone(tmp_path):
    """A trial without a checkpoint reads as new; its directory is cleared for a fresh start only when the process
    that ran in it has exited. A train.py still running there (its launcher killed) or running on another host is
    left alone."""
    import socket

    spec = sweep.load_sweep(SWEEPS / "k.yaml")
    trials = sweep.build_trials(spec, sweep.expand(spec)[:3], [], tmp_path)
    host = socket.gethostname()
    owners = [f"{host} {os.getpid()}", f"another-machine {os.getpid()}", f"{host} {_dead_pid()}"]
    for trial, owner in zip(trials, owners):
        trial.run_dir.mkdir(parents=True)
        (trial.run_dir / "config.yaml").write_text("# claimed\n")
        (trial.run_dir / ".owner").write_text(owner + "\n")
        (trial.run_dir / "partial.txt").write_text("written by the run\n")
    lines = []
    outcome = launcher.run_trials(trials, tmp_path, [launcher.Slot("test")], group="g", log=lines.append,
                                  execute_fn=fake_train())
    assert outcome.left_alone == trials[:2] and outcome.ran == [trials[2]]
    for trial in trials[:2]:
        assert (trial.run_dir / "partial.txt").exists() and not (trial.run_dir / "metrics.json").exists()
    assert not (trials[2].run_dir / "partial.txt").exists() and (trials[2].run_dir / "metrics.json").exists()
    assert sum("is in use by pid" in line for line in lines) == 2


def test_a_trial_left_half_way_resumes_from_its_checkpoint(tmp_path):
    trials = k_trials(tmp_path, n=2)
    config = launcher.trial_config(trials[0].args)
    (trials[0].run_dir / "checkpoints").mkdir(parents=True)
    (trials[0].run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (trials[0].run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (trials[1].run_dir).mkdir(parents=True)  # failed before its first checkpoint: started afresh
    (trials[1].run_dir / "config.yaml").write_text(yaml.safe_dump(launcher.trial_config(trials[1].args)))
    states = launcher.plan(trials)
    assert [s for _, s in states] == ["resume", "new"]
    assert launcher.trial_command(trials[0], "resume")[3:] == ["--resume", str(trials[0].run_dir), "--no-progress"]
    assert launcher.trial_command(trials[1], "new")[3:] == [*trials[1].args, "--no-progress"]


def test_one_failed_trial_is_reported_and_the_exit_status_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(launcher, "execute", fake_train(fail={"k=10_seed=5"}))
    code = sweep.main([str(SWEEPS / "k.yaml"), "--seeds", "5", "--epochs", "2", "--workers", "2", "--output", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "k=10_seed=5: FAILED (exit 1)" in out and "RuntimeError: CUDA out of memory" in out
    assert f"failed: k=10_seed=5 (exit 1); log {tmp_path / 'logs' / 'k=10_seed=5.log'}" in out
    assert "5 ran, 0 skipped (finished before), 1 failed" in out
    assert (tmp_path / "logs" / "k=10_seed=5.log").exists()
    table = (tmp_path / "sweep.md").read_text()
    assert "| 10 | 0/1 | – | – |" in table and "| 5 | 1/1 |" in table
    monkeypatch.setattr(launcher, "execute", fake_train())  # the same command again runs only the failed trial
    assert sweep.main([str(SWEEPS / "k.yaml"), "--seeds", "5", "--epochs", "2", "--workers", "2", "--output", str(tmp_path)]) == 0
    assert "1 ran, 5 skipped (finished before), 0 failed" in capsys.readouterr().out


def test_report_tabulates_the_finished_trials_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(launcher, "execute", fake_train(fail={"k=10_seed=5", "k=15_seed=5"}))
    args = [str(SWEEPS / "k.yaml"), "--seeds", "5", "--epochs", "2", "--workers", "2", "--output", str(tmp_path)]
    assert sweep.main(args) == 1
    capsys.readouterr()
    (tmp_path / "sweep.md").unlink()

    def must_not_run(cmd, env, log_path):
        raise AssertionError(f"--report ran a trial: {cmd}")

    monkeypatch.setattr(launcher, "execute", must_not_run)
    assert sweep.main([*args, "--report"]) == 0
    out = capsys.readouterr().out
    assert "--report: 4 of 6 trials finished; the table leaves out the other 2 and nothing runs" in out
    table = (tmp_path / "sweep.md").read_text()
    assert "| 10 | 0/1 | – | – |" in table and "| 5 | 1/1 |" in table and "--report" not in table


# -- the real thing -------------------------------------------------------------------------------
def test_a_sweep_launches_real_trials_and_tabulates_what_they_wrote(tmp_path, data_dir):
    """Every other launcher test here stands a fake train.py in: this one runs two real trials (one epoch each) as
    subprocesses and reads the table against their own metrics.json."""
    spec = yaml.safe_load((SWEEPS / "hvg.yaml").read_text())
    spec["parameters"]["hvg"] = {"values": [300, 500]}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "two"
    proc = cli(tmp_path / "two.yaml", "--dataset", "pbmc68k", "--seeds", "5", "--epochs", "1", "--hidden-dim", "16",
               "--no-umap", "--workers", "1", "--data-dir", data_dir, "--output", out, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 ran, 0 skipped" in proc.stdout
    table = (out / "sweep.md").read_text()
    for hvg in (300, 500):
        metrics = json.loads((out / f"hvg={hvg}_seed=5" / "metrics.json").read_text())
        assert metrics["epoch"] == 1 and metrics["n_genes"] == hvg
        assert f"| {hvg} | 1/1 | {hvg} | {metrics['acc']:.4f} |" in table


@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="finds a leftover process through /proc (Linux)")
def test_sigterm_stops_the_running_trial_with_the_launcher(tmp_path, data_dir):
    """``kill`` / ``timeout`` / a batch system send the launcher SIGTERM: it stops its running trial (which ends after
    its epoch with a checkpoint) and exits 143. Before, the launcher died at once and its trial trained on, orphaned."""
    spec = yaml.safe_load((SWEEPS / "hvg.yaml").read_text())
    spec["parameters"]["hvg"] = {"values": [500]}
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "one"
    log = out / "logs" / "seed=5.log"  # one setting: the trial is named by its seed
    proc = subprocess.Popen([sys.executable, "-m", "scrcl.experiments.sweep", str(tmp_path / "one.yaml"), "--dataset", "pollen",
                             "--seeds", "5", "--epochs", "100000", "--eval-every", "1", "--hidden-dim", "8", "--no-umap",
                             "--workers", "1", "--data-dir", str(data_dir), "--output", str(out)],
                            cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr, running = sigterm_while_training(proc, lambda: log.exists() and "epoch 1/100000:" in log.read_text(), str(out),
                                             "trial")
    assert proc.returncode == 143, stderr[-2000:]
    assert not running, "a trial outlived its launcher"
    assert stderr.strip().splitlines()[-1].startswith("interrupted (SIGTERM); run the same command again to resume")
    assert "interrupted (SIGTERM) at epoch" in log.read_text()  # the trial's own line: it stopped after an epoch
    assert (out / "seed=5" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
def test_hvg_sweep_end_to_end_and_a_second_call_runs_nothing(tmp_path, data_dir):
    args = ["configs/sweeps/hvg.yaml", "--dataset", "pbmc68k", "--seeds", "5", "--epochs", "2", "--hidden-dim", "32",
            "--workers", "2", "--data-dir", data_dir, "--output", tmp_path / "hvg"]
    first = cli(*args, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "5 ran, 0 skipped" in first.stdout
    out = tmp_path / "hvg"
    metrics = {h: json.loads((out / f"hvg={h}_seed=5" / "metrics.json").read_text()) for h in (500, 1000, 1500, 2000, 3000)}
    assert all(m["epoch"] == 2 for m in metrics.values())
    assert metrics[500]["n_genes"] == 500 and metrics[3000]["n_genes"] == 765  # pbmc68k has 765 genes
    table = (out / "sweep.md").read_text()
    assert f"| 500 | 1/1 | 500 | {metrics[500]['acc']:.4f} |" in table
    assert (out / "sweep.png").stat().st_size > 10_000 and len((out / "sweep.csv").read_text().splitlines()) == 6
    stamps = {h: (out / f"hvg={h}_seed=5" / "metrics.json").stat().st_mtime for h in metrics}
    second = cli(*args, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "0 ran, 5 skipped" in second.stdout and "started" not in second.stdout
    assert stamps == {h: (out / f"hvg={h}_seed=5" / "metrics.json").stat().st_mtime for h in metrics}


def test_a_relative_data_path_is_the_same_setting_written_either_way(tmp_path, monkeypatch):
    """Runs record --data absolute; a batch repeated with the same relative --data (to skip finished trials or resume
    stopped ones) must find them, and so must a run recorded before paths were made absolute."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.h5ad").write_bytes(b"")
    expected = launcher.trial_config(["--data", "mine.h5ad", "--n-clusters", "3"])
    assert expected["data"] == str(tmp_path / "mine.h5ad")
    monkeypatch.setenv("SCRCL_DATA_DIR", str(tmp_path))
    for recorded in (str(tmp_path / "mine.h5ad"), "mine.h5ad", "./mine.h5ad", "$SCRCL_DATA_DIR/mine.h5ad"):  # the last:
        # as benchmarks/records.py saves a path in the data directory
        run_dir = tmp_path / "run"
        run_dir.mkdir(exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump({**expected, "data": recorded}))
        assert launcher.differing_settings(run_dir, expected) == []
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**expected, "data": "other.h5ad"}))
    assert [d.split(":")[0] for d in launcher.differing_settings(run_dir, expected)] == ["data"]
