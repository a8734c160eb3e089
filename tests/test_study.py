"""benchmarks/study.py, run as a user would: real training subprocesses at tiny sizes on a scripted dataset."""

import json
import os
import pickle
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, load_script, run_script
from test_collect_sac import TINY as TINY_COLLECT
from test_select import TINY, write_scripted_point_robot_dataset

study = load_script("benchmarks/study.py", "study")
COLLECT_FLAGS = "--collect-flags=" + shlex.join(str(x) for kv in TINY_COLLECT.items() for x in kv)
LONG = ["--num-train-steps", "1000", "--eval-every", "100", "--protocols", "offline"]  # seconds, not a blink


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("data")
    write_scripted_point_robot_dataset(data_dir, checkpoints=3, episodes=4)  # 240 transitions per task
    return data_dir


def study_args(tmp_path, data_dir, *args, flags=TINY, command="run"):
    dirs = ["--results-dir", tmp_path / "results"] + (["--runs-dir", tmp_path / "runs"] if command != "table" else [])
    if command == "run":
        dirs += ["--data-dir", data_dir, "--flags=" + shlex.join(flags)]
    return ["benchmarks/study.py", command, *dirs, *args]


def run_study(tmp_path, data_dir, *args, flags=TINY, command="run", check=True, timeout=300):
    return run_script(
        *study_args(tmp_path, data_dir, *args, flags=flags, command=command), check=check, timeout=timeout
    )


def result(tmp_path, name, env_id="point-robot") -> dict:
    return json.loads((tmp_path / "results" / env_id / f"{name}.json").read_text())


def headers(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith(study.HEADER)]


# ------------------------------------------------------------------------------------------------
# The registry and the helpers, without running anything
# ------------------------------------------------------------------------------------------------
def test_methods_groups_and_order(tmp_path):
    methods = study.load_methods(None)
    assert study.expand_methods(["main"], methods) == ["select", "csro", "focal", "offpearl"]
    assert study.expand_methods(["select", "sigma", "select"], methods) == [
        "select", "select-sigma0.1", "select-sigma0.2", "select-sigma0.5"
    ]  # fmt: skip
    assert methods["select-club-0"]["flags"] == ["--club-weight", "0", "--num-train-steps", "10000"]
    assert methods["select-sigma0.5"] == {"reevaluates": "select", "flags": [*study.SIGMA_EVAL, "0.5"]}
    fidelity = study.expand_methods(["fidelity"], methods)
    assert fidelity[:2] == ["csro-states-raw", "select-states-norm"] and len(fidelity) == 22
    assert methods["csro-states-raw-reinfer-csro"] == {"reevaluates": "csro-states-raw", "flags": study.REINFER_EVAL}
    assert methods["csro-gp-gradient"] == {
        "script": "baselines/csro.py",
        "flags": ["--gradient-penalty", "gradient", "--normalize-states", "False", "--num-train-steps", "10000",
                  "--eval-every", "1000"],  # seed 1's training length, whatever the cpu preset says
    }  # fmt: skip
    runs = study.plan(["point-robot", "cheetah-vel"], ["select-sigma0.1", "select", "csro"], [1, 2], methods)
    assert [(r.seed, r.env_id, r.method) for r in runs[:3]] == [
        (1, "point-robot", "select"), (1, "point-robot", "csro"), (1, "point-robot", "select-sigma0.1")
    ]  # fmt: skip
    assert [r.seed for r in runs] == [1] * 6 + [2] * 6  # seed-major
    sigma = runs[2]
    assert (sigma.script, sigma.reevaluates, sigma.base_name) == ("select.py", "select", "select__s1")
    file = tmp_path / "methods.json"
    file.write_text(json.dumps({"select": {"script": "select.py", "flags": ["--alpha", "1"]}, "x": {"script": "a"}}))
    methods = study.load_methods(str(file))
    assert methods["select"]["flags"] == ["--alpha", "1"] and methods["x"] == {"script": "a", "flags": []}
    with pytest.raises(SystemExit, match="unknown method or group 'nope'"):
        study.expand_methods(["nope"], methods)
    file.write_text(json.dumps({"y": {"reevaluates": "select-sigma0.1"}}))
    with pytest.raises(SystemExit, match="not a training method"):
        study.load_methods(str(file))


def test_commands_of_a_run_and_a_reevaluation():
    s = study.Study(Path("/r"), Path("/res"), Path("/d"), ("--eval-runs", "1"))
    run = study.Run("point-robot", "select-club-0", 3, "select.py", ("--club-weight", "0"), "select")
    assert s.command(run) == [sys.executable, "select.py", "--env-id", "point-robot", "--seed", "3", "--data-dir",
                              "/d", "--runs-dir", "/r/point-robot", "--run-name", "select-club-0__s3",
                              "--club-weight", "0", "--eval-runs", "1"]  # fmt: skip
    assert s.log(run) == Path("/r/point-robot/select-club-0__s3.log")
    assert s.result(run) == Path("/res/point-robot/select-club-0__s3.json")
    reeval = study.Run(
        "point-robot", "select-sigma0.1", 3, "select.py", ("--proximal-noise-std", "0.1"), None, "select"
    )
    assert s.command(reeval) == [sys.executable, "select.py", "--eval-checkpoint",
                                 "/r/point-robot/select__s3/checkpoint.pt", "--eval-output",
                                 "/r/point-robot/select-sigma0.1__s3/reeval.json", "--proximal-noise-std", "0.1",
                                 "--eval-runs", "1"]  # fmt: skip


def test_long_budget_sets_steps_per_env_and_its_own_folders(tmp_path):
    s = study.Study(Path("/r"), Path("/res"), Path("/d"), budget="long")
    commands = {e: s.command(study.Run(e, "csro", 1, "baselines/csro.py")) for e in ("cheetah-vel", "humanoid-dir")}
    assert commands["cheetah-vel"][-4:] == ["--num-train-steps", "30000", "--eval-every", "2500"]
    assert commands["humanoid-dir"][-4:] == ["--num-train-steps", "12000", "--eval-every", "2000"]
    # the budget counts RL steps: CORRO's and BOReL's pre-training (their scripts' defaults, or a run's flags) on top
    corro, borel = (study.Run("cheetah-vel", m, 1, f"baselines/{m}.py") for m in ("corro", "borel"))
    assert s.command(corro)[-4:-2] == ["--num-train-steps", str(30_000 + 1_000 + 10_000)]
    assert s.command(borel)[-4:-2] == ["--num-train-steps", str(30_000 + 2_000)]
    vae6000 = study.Run("humanoid-dir", "borel-vae6000", 1, "baselines/borel.py", ("--vae-steps", "6000"))
    assert s.command(vae6000)[-6:-4] == ["--num-train-steps", str(12_000 + 6_000)]
    flagged = study.Study(Path("/r"), Path("/res"), Path("/d"), ("--encoder-steps=500",), budget="long")
    assert flagged.command(corro)[-5:-3] == ["--num-train-steps", str(30_000 + 1_000 + 500)]
    # a method's own flags and --flags come after the budget's, and so win
    assert study.Study(Path("/r"), Path("/res"), Path("/d"), ("--eval-every", "5000"), budget="long").command(
        study.Run("hopper-rand-params", "select", 2, "select.py")
    )[-6:] == ["--num-train-steps", "20000", "--eval-every", "2500", "--eval-every", "5000"]
    status = run_study(tmp_path, None, "--envs", "walker-rand-params", "--methods", "main", "--seeds", "1",
                       "--budget", "long", command="status").stdout  # fmt: skip
    assert "total 4 runs: 0 done, 0 finished, 0 partial, 4 not started" in status
    (tmp_path / "results" / "long" / "walker-rand-params").mkdir(parents=True)  # results/long/<env>/: its own
    record = {"final": {"step": 20000}, "wall_seconds": 60.0}
    (tmp_path / "results" / "long" / "walker-rand-params" / "select__s1.json").write_text(json.dumps(record))
    status = run_study(tmp_path, None, "--envs", "walker-rand-params", "--methods", "select", "--seeds", "1",
                       "--budget", "long", command="status").stdout  # fmt: skip
    assert "done   step 20000, 60 s" in status and "total 1 runs: 1 done" in status
    quick = run_study(tmp_path, None, "--envs", "walker-rand-params", "--methods", "select", "--seeds", "1",
                      command="status").stdout  # fmt: skip
    assert "total 1 runs: 0 done" in quick  # the quick budget's folder is another
    proc = run_study(tmp_path, None, "--envs", "point-robot", "--budget", "long", command="status", check=False)
    assert proc.returncode == 2 and "--budget long has no steps for point-robot" in proc.stderr


def test_pretraining_defaults_are_the_scripts():
    """study.PRETRAINING's defaults are the pre-training steps of the scripts' own Args."""
    for script, flags in study.PRETRAINING.items():
        args = load_script(script, f"pretraining_{Path(script).stem}").Args()
        for flag, default in flags.items():
            assert getattr(args, flag[2:].replace("-", "_")) == default, (script, flag)


def test_result_files_carry_no_path_of_the_machine(tmp_path):
    """portable(): the interpreter becomes "python", paths inside the checkout relative; every committed result file
    is so (tools/portable_results.py rewrote the older ones)."""
    root = Path("/x/checkout")
    args = {"runs_dir": "/x/checkout/runs/a", "other": "/elsewhere/data", "n": 3, "root": "/x/checkout"}
    record = {"command": ["/x/checkout/.venv/bin/python", "select.py", "--data-dir", "/x/checkout/data"], "args": args}
    assert study.portable(record, root, "/x/checkout/.venv/bin/python") == {
        "command": ["python", "select.py", "--data-dir", "data"],
        "args": {"runs_dir": "runs/a", "other": "/elsewhere/data", "n": 3, "root": "."},
    }

    def strings(obj):
        if isinstance(obj, dict):
            return [x for v in obj.values() for x in strings(v)]
        if isinstance(obj, list):
            return [x for v in obj for x in strings(v)]
        return [obj] if isinstance(obj, str) else []

    for path in sorted((ROOT / "results").rglob("*.json")):
        absolute = [x for x in strings(json.loads(path.read_text())) if x.startswith(("/", "~")) or x[1:3] == ":\\"]
        assert not absolute, f"{path.relative_to(ROOT)} records paths of a machine: {absolute[:3]}"


def test_last_error_line(tmp_path):
    log = tmp_path / "a.log"
    head = f"{study.HEADER} attempt 1, now: python x.py\n"
    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1\n    f()\n    ^^^\nValueError: bad\n\n'
    cases = {
        "step 1\nerror: --gamma must be in [0, 1), got 2.0\n\n": "error: --gamma must be in [0, 1), got 2.0",
        traceback: "ValueError: bad",
        "step 1\nKilled\n\n": "Killed",
        "": "(empty log)",
    }
    for text, expected in cases.items():
        log.write_text(head + text)
        assert study.last_error_line(log) == expected
    log.write_text(head + "error: old attempt\n" + head.replace("1,", "2,") + "step 5\n")  # the last attempt only
    assert study.last_error_line(log) == "step 5"


def protocol_result(value: float, new_format: bool) -> dict:
    result = {"return": value, "per_task": {"2": value, "6": value}, "context_shift": 0.5,
              "context_shift_per_task": {"2": 0.4, "6": 0.6}, "per_run": [[value]]}  # fmt: skip
    if new_format:
        result |= {"per_round": [value - 1, value], "per_round_runs": [2, 2]}
        result |= {"exploration_transitions": [[20, 20], [20, 15], [18, 20]]}  # 3 runs x 2 rounds
    else:
        result["per_episode"] = [value - 1, value]
    return result


def make_run_dir(run_dir: Path, new_format: bool = True, steps=(20, 40)) -> None:
    """A training run's record as the scripts write it (new contract, or today's shorter final_eval.json)."""
    run_dir.mkdir(parents=True)
    protocols = ("offline", "online-proximal")
    history = [{"step": s, "protocols": {p: protocol_result(-20.0 + s / 10, new_format) for p in protocols}}
               for s in steps]  # fmt: skip
    lines = "".join(json.dumps(h) + "\n" for h in history)
    (run_dir / "eval_history.jsonl").write_text(lines + '{"step": 60, "protoc')  # a line cut short by a kill
    final = {"step": steps[-1], "args": {"seed": 1, "num_train_steps": steps[-1]}, **history[-1]}
    if new_format:
        final |= {"dataset": {"env_id": "point-robot", "content_hash": "abc"}, "wall_seconds": 12.5, "threads": 1}
        final |= {"code": {"git_commit": "c0ffee", "git_dirty": False, "files": {}}, "device": "cpu", "torch": "9.9"}
    (run_dir / "final_eval.json").write_text(json.dumps(final))
    (run_dir / "checkpoint.pt").write_bytes(b"")
    attempts = [{"seconds": 3.0, "exit": -15, "resume": False}, {"seconds": 4.5, "exit": 0, "resume": True}]
    (run_dir / study.ATTEMPTS).write_text(json.dumps(attempts))


def test_result_record_of_a_hand_made_run_dir(tmp_path):
    run = study.Run("point-robot", "select-club-0", 1, "select.py", ("--club-weight", "0"), "select")
    make_run_dir(tmp_path / "new")
    record = study.result_record(run, tmp_path / "new", ["python", "select.py"], ["--eval-runs", "1"])
    assert record["schema"] == 1 and (record["env_id"], record["method"], record["seed"]) == (
        "point-robot",
        run.method,
        1,
    )
    assert (record["variant_of"], record["reevaluates"], record["script"]) == ("select", None, "select.py")
    assert record["flags"] == ["--club-weight", "0"] and record["study_flags"] == ["--eval-runs", "1"]
    assert record["command"] == ["python", "select.py"] and record["args"]["num_train_steps"] == 40
    assert record["preset"] is None and record["dataset"]["content_hash"] == "abc"
    assert record["code"]["git_commit"] == "c0ffee" and record["wall_seconds"] == 12.5
    assert (record["threads"], record["device"], record["machine"]["torch"]) == (1, "cpu", "9.9")
    assert set(record["machine"]) == {"cpu", "torch", "python", "platform"}
    final = record["final"]
    assert final["step"] == 40 and set(final["protocols"]) == {"offline", "online-proximal"}
    assert final["protocols"]["offline"] == {
        "return": -16.0, "per_task": {"2": -16.0, "6": -16.0}, "per_round": [-17.0, -16.0], "per_round_runs": [2, 2],
        "context_shift": 0.5, "context_shift_per_task": {"2": 0.4, "6": 0.6}, "exploration_transitions_min": [18, 15],
    }  # fmt: skip
    assert record["curve"] == {
        "steps": [20, 40],
        "return": {"offline": [-18.0, -16.0], "online-proximal": [-18.0, -16.0]},
        "context_shift": {"offline": [0.5, 0.5], "online-proximal": [0.5, 0.5]},
    }
    assert len(json.dumps(record)) < 5000

    make_run_dir(tmp_path / "old", new_format=False)  # today's final_eval.json: the new keys are None
    record = study.result_record(run, tmp_path / "old", ["python", "select.py"])
    offline = record["final"]["protocols"]["offline"]
    assert offline["per_round"] is None and offline["exploration_transitions_min"] is None
    assert record["dataset"] is None and record["device"] is None and record["wall_seconds"] == 7.5  # the attempts
    assert set(record["code"]["files"]) == {"select.py", "omrl_envs.py", "collect_sac.py"}

    reeval = study.Run(
        "point-robot", "select-sigma0.1", 1, "select.py", ("--proximal-noise-std", "0.1"), None, "select"
    )
    (tmp_path / "re").mkdir()
    final = {
        "step": 40,
        "args": {"proximal_noise_std": 0.1},
        "protocols": {"online-proximal": protocol_result(-5, True)},
    }
    (tmp_path / "re" / study.REEVAL).write_text(json.dumps(final))
    record = study.result_record(reeval, tmp_path / "re", ["python"])
    assert record["reevaluates"] == "select__s1" and record["final"]["step"] == 40
    assert record["curve"] == {"steps": [], "return": {}, "context_shift": {}}


def test_submitit_callable_requeues_itself_with_the_same_run():
    pytest.importorskip("submitit", reason="requirements-study.txt")
    s = study.Study(Path("/r"), Path("/res"), Path("/d"))
    run = study.Run("point-robot", "select", 1, "select.py")
    task = study.SubmititRun(s)
    delayed = task.checkpoint(run)
    assert delayed.function is task and delayed.args == (run,) and task.children.stopping
    again = pickle.loads(pickle.dumps(task))  # what submitit saves for the requeued job: no process handles
    assert again.study == s and not again.children.stopping


def test_status_reports_done_finished_partial_and_not_started(tmp_path):
    runs = tmp_path / "runs" / "point-robot"
    (tmp_path / "results" / "point-robot").mkdir(parents=True)
    (tmp_path / "results" / "point-robot" / "select__s1.json").write_text(
        json.dumps({"final": {"step": 40}, "wall_seconds": 7.0})
    )
    make_run_dir(runs / "csro__s1")  # finished, no result yet
    make_run_dir(runs / "focal__s1")
    (runs / "focal__s1" / "final_eval.json").unlink()  # partial: evaluated at 20 and 40, checkpoint there
    out = run_study(tmp_path, None, "--seeds", "1", command="status").stdout
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("point-robot")}
    assert "done" in lines["select"] and "step 40, 7 s" in lines["select"]
    assert "finished" in lines["csro"]
    assert (
        "partial" in lines["focal"]
        and "last evaluated step 40, checkpoint.pt: yes, last attempt exit 0" in lines["focal"]
    )
    assert "not started" in lines["offpearl"]
    assert "total 4 runs: 1 done, 1 finished, 1 partial, 1 not started" in out


# ------------------------------------------------------------------------------------------------
# Real runs
# ------------------------------------------------------------------------------------------------
def test_finished_runs_are_skipped_and_a_missing_result_is_written(tiny_data, tmp_path):
    methods = ["--methods", "select-sigma0.1", "select", "csro", "--seeds", "1"]  # the re-evaluation waits for select
    out = run_study(tmp_path, tiny_data, *methods).stdout
    assert "3 of 3 runs done, 0 failed" in out, out
    logs = {p.name: (p.read_text(), p.stat().st_mtime_ns) for p in (tmp_path / "runs" / "point-robot").glob("*.log")}
    assert set(logs) == {"select__s1.log", "csro__s1.log", "select-sigma0.1__s1.log"}
    select, sigma = result(tmp_path, "select__s1"), result(tmp_path, "select-sigma0.1__s1")
    assert select["final"]["step"] == 40 and select["curve"]["steps"] == [20, 40]
    assert select["study_flags"] == TINY and select["command"][:3] == ["python", "select.py", "--env-id"]
    assert result(tmp_path, "csro__s1")["script"] == "baselines/csro.py"
    assert sigma["reevaluates"] == "select__s1" and list(sigma["final"]["protocols"]) == ["online-proximal"]
    assert sigma["args"]["proximal_noise_std"] == 0.1 and "--eval-checkpoint" in sigma["command"]
    critic_loss = select["training"]["losses/critic_loss"]  # the TensorBoard scalars, at every logged step
    assert critic_loss["steps"] == sorted(critic_loss["steps"]) and critic_loss["steps"][-1] == 40
    assert len(critic_loss["values"]) == len(critic_loss["steps"]) and sigma["training"] == {}

    results = {p: p.read_bytes() for p in (tmp_path / "results").rglob("*.json")}
    (tmp_path / "results" / "point-robot" / "csro__s1.json").unlink()  # finished, result lost: written, not re-run
    out = run_study(tmp_path, tiny_data, *methods).stdout
    assert "2 of 3 runs have a result already" in out and "csro__s1: had finished: result written" in out
    assert {p.name: (p.read_text(), p.stat().st_mtime_ns) for p in logs_dir(tmp_path)} == logs  # no new process
    again = {p: p.read_bytes() for p in (tmp_path / "results").rglob("*.json")}
    assert set(again) == set(results) and all(again[p] == results[p] for p in results if "csro" not in p.name)
    status = run_study(tmp_path, None, *methods, command="status").stdout
    assert "total 3 runs: 3 done, 0 finished, 0 partial, 0 not started" in status


def logs_dir(tmp_path):
    return (tmp_path / "runs" / "point-robot").glob("*.log")


def test_a_killed_study_resumes_its_runs(tiny_data, tmp_path):
    args = study_args(tmp_path, tiny_data, "--methods", "select", "--seeds", "1", flags=[*TINY, *LONG])
    run_dir = tmp_path / "runs" / "point-robot" / "select__s1"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runner = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=env, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.time() + 120
    while not ((run_dir / "checkpoint.pt").is_file() and study.read_history(run_dir / "eval_history.jsonl")):
        assert runner.poll() is None and time.time() < deadline, "the run never wrote a checkpoint"
        time.sleep(0.05)
    os.killpg(runner.pid, signal.SIGTERM)  # the runner and its training process
    out, _ = runner.communicate(timeout=60)
    assert runner.returncode == 128 + signal.SIGTERM, out
    assert "stopped by SIGTERM" in out and "run the same command again to continue" in out
    assert not (run_dir / "final_eval.json").is_file(), "the run finished before it was killed: make LONG longer"
    deadline = time.time() + 10
    while True:  # nothing of the study is left running
        try:
            os.killpg(runner.pid, 0)
        except ProcessLookupError:
            break
        assert time.time() < deadline, "a process of the killed study is still running"
        time.sleep(0.1)

    status = run_study(tmp_path, None, "--methods", "select", "--seeds", "1", command="status").stdout
    assert "partial" in status and "checkpoint.pt: yes" in status
    out = run_script(*args, timeout=300).stdout
    assert "1 of 1 runs done, 0 failed" in out
    attempts = headers(tmp_path / "runs" / "point-robot" / "select__s1.log")
    assert len(attempts) == 2 and "--resume" not in attempts[0] and attempts[1].endswith("--resume")
    record = result(tmp_path, "select__s1")
    assert record["final"]["step"] == 1000 and record["args"]["num_train_steps"] == 1000
    assert record["curve"]["steps"] == list(range(100, 1001, 100))
    assert [a["resume"] for a in record["attempts"]] == [False, True] and record["attempts"][1]["exit"] == 0


def test_failed_runs_are_reported_and_the_others_finish(tiny_data, tmp_path):
    methods_file = tmp_path / "methods.json"
    broken = {"broken": {"script": "select.py", "flags": ["--gamma", "2"]}, "broken-sigma": {"reevaluates": "broken"}}
    methods_file.write_text(json.dumps(broken))
    args = ["--methods-file", methods_file, "--methods", "broken", "select", "broken-sigma", "--seeds", "1"]
    proc = run_study(tmp_path, tiny_data, *args, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    log = tmp_path / "runs" / "point-robot" / "broken__s1.log"
    assert "1 of 3 runs done, 2 failed" in proc.stdout
    assert "FAILED point-robot/broken__s1: exit 1: error: --gamma must be in [0, 1), got 2.0" in proc.stdout
    assert f"  log:     {log}" in proc.stdout and "  error:   error: --gamma must be in [0, 1)" in proc.stdout
    command = next(line for line in proc.stdout.splitlines() if line.startswith("  command:"))
    assert command.endswith("--run-name broken__s1 --gamma 2 " + shlex.join(TINY))
    assert "FAILED point-robot/broken-sigma__s1: its base run point-robot/broken__s1 failed" in proc.stdout
    assert result(tmp_path, "select__s1")["final"]["step"] == 40
    assert not (tmp_path / "results" / "point-robot" / "broken__s1.json").exists()


def test_a_failed_collection_fails_the_runs_of_its_env(tmp_path):
    args = ["--methods", "select", "--seeds", "1", "--collect-flags=--total-steps -5"]
    proc = run_study(tmp_path, tmp_path / "data", *args, check=False)
    assert proc.returncode == 1
    assert (
        "FAILED point-robot/select__s1: point-robot: building the dataset failed (collect_sac.py exit 1)" in proc.stdout
    )
    assert (
        "--total-steps must be positive" in proc.stdout
        and not (tmp_path / "runs" / "point-robot" / "select__s1").exists()
    )


def test_one_collector_per_env_across_processes(tmp_path):
    """Two studies start at once on a missing dataset: one builds it (collect_sac.py at tiny sizes), the other waits
    for it under the lock; in the first, two runs wait for the same collector."""
    data_dir = tmp_path / "data"
    methods_file = tmp_path / "methods.json"  # the second study's run fails at once (no third training process)
    methods_file.write_text(json.dumps({"broken": {"script": "select.py", "flags": ["--gamma", "2"]}}))
    first = study_args(tmp_path, data_dir, "--methods", "select", "--seeds", "1", "2", "--jobs", "2", COLLECT_FLAGS)
    second = study_args(tmp_path, data_dir, "--methods-file", methods_file, "--methods", "broken", "--seeds", "1",
                        "--jobs", "1", COLLECT_FLAGS)  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, *map(str, a)], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for a in (first, second)]  # fmt: skip
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert procs[0].returncode == 0, outs[0]
    assert procs[1].returncode == 1 and "error: --gamma must be in [0, 1)" in outs[1], outs[1]  # after the dataset
    collect_log = tmp_path / "runs" / "point-robot" / "collect.log"
    assert len(headers(collect_log)) == 1, collect_log.read_text()  # collect_sac.py ran once
    assert sum("no dataset at" in out for out in outs) == 1
    assert (data_dir / "point-robot" / "manifest.json").is_file()
    assert [result(tmp_path, f"select__s{s}")["final"]["step"] for s in (1, 2)] == [40, 40]
    assert list((tmp_path / "runs" / "point-robot" / "runs").iterdir())  # the collector's TensorBoard run


def test_submitit_local_executor_runs_the_study(tiny_data, tmp_path):
    pytest.importorskip("submitit", reason="requirements-study.txt")
    args = ["--backend", "submitit-local", "--methods", "select", "csro", "--seeds", "1", "--jobs", "2"]
    out = run_study(tmp_path, tiny_data, *args).stdout
    assert "2 of 2 runs done, 0 failed" in out, out
    for name in ("select__s1", "csro__s1"):
        assert result(tmp_path, name)["final"]["step"] == 40
        assert len(headers(tmp_path / "runs" / "point-robot" / f"{name}.log")) == 1
    assert list((tmp_path / "runs" / "submitit").glob("*_result.pkl"))  # submitit's own record of the jobs
    out = run_study(tmp_path, tiny_data, *args).stdout  # nothing left to submit
    assert "2 of 2 runs have a result already" in out and "2 of 2 runs done, 0 failed" in out


def test_table_prints_the_results_tables(tmp_path):
    plot_results = load_script("plot_results.py", "plot_results_for_study")
    if not hasattr(plot_results, "results_tables"):
        pytest.skip("plot_results.results_tables is not written yet")
    for method, seed in (("select", 1), ("select", 2), ("csro", 1)):
        run = study.Run("point-robot", method, seed, "select.py")
        make_run_dir(tmp_path / "runs" / run.name)
        record = study.result_record(run, tmp_path / "runs" / run.name, ["python"])
        study.write_json_atomic(tmp_path / "results" / "point-robot" / f"{run.name}.json", record)
    out = run_study(tmp_path, None, "--methods", "select", "csro", command="table").stdout
    assert "select" in out and "csro" in out and "|" in out


def test_data_seeds_build_a_dataset_each_and_their_runs_record_it(tmp_path):
    """--data-seeds 0 1: collect_sac.py --seed 0 at <data-dir>/<env>/ and --seed 1 at <data-dir>/data-seed-1/<env>/
    (tiny sizes), one run per dataset named <method>__d<K>__s<seed>, each result file carrying its data seed and
    its own dataset's content hash; a dataset of the wrong seed in a seed's directory fails its runs."""
    data_dir = tmp_path / "data"
    args = ["--methods", "select", "--seeds", "1", "--data-seeds", "0", "1", "--jobs", "2", COLLECT_FLAGS]
    out = run_study(tmp_path, data_dir, *args).stdout
    assert "2 of 2 runs done, 0 failed" in out, out
    manifests = {k: data_dir / d / "point-robot" / "manifest.json" for k, d in ((0, "."), (1, "data-seed-1"))}
    assert {k: json.loads(m.read_text())["seed"] for k, m in manifests.items()} == {0: 0, 1: 1}
    records = {k: result(tmp_path, f"select__d{k}__s1") for k in (0, 1)}
    assert {k: (r["data_seed"], r["dataset"]["seed"]) for k, r in records.items()} == {0: (0, 0), 1: (1, 1)}
    for k, record in records.items():
        assert record["args"]["data_dir"] == str(manifests[k].parent.parent.resolve())
    assert records[0]["dataset"]["content_hash"] != records[1]["dataset"]["content_hash"]
    logs = tmp_path / "runs" / "point-robot"
    assert {p.name for p in logs.glob("collect*.log")} == {"collect__d0.log", "collect__d1.log"}
    assert "--seed 1" in headers(logs / "collect__d1.log")[0]
    status = run_study(tmp_path, None, "--methods", "select", "--seeds", "1", "--data-seeds", "0", "1",
                       command="status").stdout  # fmt: skip
    assert "total 2 runs: 2 done" in status

    (data_dir / "data-seed-2").mkdir()  # seed 0's dataset where seed 2's belongs: refused, nothing trains
    (data_dir / "point-robot").rename(data_dir / "data-seed-2" / "point-robot")
    proc = run_study(tmp_path, data_dir, "--methods", "select", "--seeds", "1", "--data-seeds", "2", check=False)
    assert proc.returncode == 1 and "was collected with --seed 0, not 2" in proc.stdout, proc.stdout
    assert not (logs / "select__d2__s1").exists()
