"""collect_sac.py: tiny end-to-end collections of every family, kill and resume, independence of the task learners,
same seed -> same dataset, a learning signal, probes of a few tasks, and one-line errors for bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, load_script, run_script
from test_select import TINY as SELECT_TINY

import omrl_envs

# Point-Robot at tiny size: checkpoints 150, 200, 250; 3 episodes of 20 steps each.
TINY = {
    "--total-steps": 300,
    "--random-steps": 100,
    "--checkpoint-every": 50,
    "--first-checkpoint": 150,
    "--episodes-per-checkpoint": 3,
    "--hidden-dim": 16,
    "--batch-size": 16,
    "--learning-rate": 1e-3,
}
# MuJoCo families: one checkpoint at step 40 after 20 updates, 1 episode (up to the family's 200-step horizon).
TINY_MUJOCO = {
    "--total-steps": 60,
    "--random-steps": 20,
    "--checkpoint-every": 20,
    "--first-checkpoint": 40,
    "--episodes-per-checkpoint": 1,
    "--hidden-dim": 16,
    "--batch-size": 16,
}


def collect(data_dir, env_id="point-robot", settings=TINY, *extra, check=True, timeout=300):
    flags = [str(x) for kv in settings.items() for x in kv]
    args = ["collect_sac.py", "--env-id", env_id, "--data-dir", data_dir, "--runs-dir", f"{data_dir}_runs",
            "--exp-name", "test_collect_sac"]  # fmt: skip
    return run_script(*args, *flags, *extra, check=check, timeout=timeout)


def expected_checkpoints(settings):
    first, stop, every = settings["--first-checkpoint"], settings["--total-steps"], settings["--checkpoint-every"]
    return list(range(first, stop, every))


def check_dataset(dataset_dir, env_id, settings, probe=None):
    """The dataset validates; every task has exactly the expected checkpoints and episodes, none lost or repeated.
    A probe (its task ids): those tasks' files alone."""
    if probe is None:
        manifest, data = omrl_envs.load_dataset(dataset_dir, env_id)
    else:
        manifest = omrl_envs.read_manifest(dataset_dir, env_id, allow_probe=True)
        data = {task: omrl_envs.read_task_data(dataset_dir, env_id, task) for task in probe}
    tasks = range(omrl_envs.NUM_TASKS) if probe is None else probe
    assert sorted(f.name for f in dataset_dir.glob("task_*.npz")) == [f"task_{t:02d}.npz" for t in sorted(tasks)]
    checkpoints = expected_checkpoints(settings)
    episodes = settings["--episodes-per-checkpoint"]
    assert manifest["complete"] is True and manifest["checkpoints"] == checkpoints
    assert set(manifest["checkpoint_returns"]) == {str(t) for t in tasks}
    assert manifest["seed"] == 0 and manifest["code_version"]["collect_sac_sha256"]
    horizon = omrl_envs.FAMILIES[env_id].horizon
    for task, arrays in data.items():
        returns = manifest["checkpoint_returns"][str(task)]
        assert len(returns) == len(checkpoints)
        assert sorted(set(arrays["checkpoint"].tolist())) == checkpoints
        assert sorted(set(arrays["episode"].tolist())) == list(range(len(checkpoints) * episodes))
        for i, checkpoint in enumerate(checkpoints):
            rows = arrays["checkpoint"] == checkpoint
            ids = arrays["episode"][rows]
            assert set(ids.tolist()) == set(range(i * episodes, (i + 1) * episodes))
            per_episode = [arrays["rewards"][rows][ids == e].sum(dtype=np.float64) for e in set(ids.tolist())]
            assert np.isclose(np.mean(per_episode), returns[i], rtol=1e-5, atol=1e-4)
            for e in set(ids.tolist()):  # each episode ends once: termination, or truncation at the horizon
                ends = arrays["terminations"][rows][ids == e] + arrays["truncations"][rows][ids == e]
                assert ends[-1] >= 1 and not ends[:-1].any() and len(ends) <= horizon
    assert (dataset_dir / "checkpoint_returns.png").stat().st_size > 0
    assert not (dataset_dir / "resume").exists()
    assert not list(dataset_dir.glob(".*.tmp"))
    return manifest, data


def assert_same_dataset(dir_a, dir_b, env_id="point-robot"):
    manifest_a, data_a = omrl_envs.load_dataset(dir_a, env_id)
    manifest_b, data_b = omrl_envs.load_dataset(dir_b, env_id)
    assert manifest_a["checkpoint_returns"] == manifest_b["checkpoint_returns"]
    for task in data_a:
        for key in data_a[task]:
            np.testing.assert_array_equal(data_a[task][key], data_b[task][key], err_msg=f"task {task} {key}")


def one_line_error(proc, *fragments):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_point_robot_end_to_end(tmp_path):
    proc = collect(tmp_path)
    manifest, data = check_dataset(tmp_path / "point-robot", "point-robot", TINY)
    assert manifest["settings"]["hidden_dim"] == 16 and manifest["settings"]["learning_rate"] == 1e-3
    # Not a probe: no mark, and the settings (in the dataset's fingerprint) as before the option existed.
    assert omrl_envs.PROBE_KEY not in manifest and "tasks" not in manifest["settings"]
    for arrays in data.values():  # Point-Robot never terminates: 20-step episodes ending in a truncation
        assert len(arrays["rewards"]) == 3 * 3 * 20
        assert not arrays["terminations"].any() and arrays["truncations"].sum() == 3 * 3
    assert "env-steps/s" in proc.stderr and "ckpt 250" in proc.stderr  # the progress bar
    assert "checkpoint" in proc.stdout and "250" in proc.stdout  # the table of returns

    # A finished dataset is never overwritten without --overwrite; with it, it is rebuilt.
    mtime = (tmp_path / "point-robot" / "task_00.npz").stat().st_mtime_ns
    one_line_error(collect(tmp_path, check=False), "finished dataset", "--overwrite")
    assert (tmp_path / "point-robot" / "task_00.npz").stat().st_mtime_ns == mtime
    collect(tmp_path, "point-robot", TINY, "--overwrite")
    assert_same_dataset(tmp_path / "point-robot", tmp_path / "point-robot")
    check_dataset(tmp_path / "point-robot", "point-robot", TINY)


@pytest.mark.parametrize("env_id", [e for e in omrl_envs.ENV_IDS if e != "point-robot"])
def test_every_mujoco_family_tiny(tmp_path, env_id):
    collect(tmp_path, env_id, TINY_MUJOCO)
    _, data = check_dataset(tmp_path / env_id, env_id, TINY_MUJOCO)
    assert data[0]["observations"].shape[1] == omrl_envs.FAMILIES[env_id].obs_dim


# Long enough to be killed in the middle: kept checkpoints 600, 700, ..., 1900; replay smaller than the run, so the
# resumed ring buffer must be rebuilt exactly.
RESUME = TINY | {
    "--total-steps": 2000,
    "--random-steps": 200,
    "--checkpoint-every": 100,
    "--first-checkpoint": 600,
    "--episodes-per-checkpoint": 2,
    "--buffer-size": 250,
}


def test_kill_and_resume(tmp_path):
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    flags = [str(x) for kv in RESUME.items() for x in kv]
    command = [sys.executable, "collect_sac.py", "--data-dir", str(killed_dir), "--runs-dir", str(tmp_path / "runs"),
               "--exp-name", "test_collect_sac"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*command, *flags], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # The episodes of step 700 are written after the resume state of step 600 (which follows step 600's episodes):
    # once they exist, a resume starts at 600 or later, with at least one kept checkpoint done.
    second_kept = killed_dir / "point-robot" / "resume" / "episodes_000000700.npz"
    deadline = time.time() + 120
    while not second_kept.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed:\n{stderr.decode()[-2000:]}"
    assert not (killed_dir / "point-robot" / omrl_envs.MANIFEST).exists()
    # The resume state keeps only the intervals that the ring buffer still holds (250 steps: 3 of 100, one of them
    # partly; one more may be written, or not yet deleted, at the kill), not all 6 or more since step 0.
    assert len(list((killed_dir / "point-robot" / "resume").glob("replay_*.npz"))) <= 5

    # Other settings: refused in one line, the unfinished run left alone.
    other = collect(killed_dir, "point-robot", RESUME | {"--learning-rate": 3e-3}, check=False)
    one_line_error(other, "unfinished run", "learning_rate", "--overwrite")

    resumed = collect(killed_dir, "point-robot", RESUME)
    assert "resuming" in resumed.stdout
    step = int(resumed.stdout.split("at env step ")[1].split()[0])
    assert 600 <= step < 1900
    check_dataset(killed_dir / "point-robot", "point-robot", RESUME)
    # The resumed run continues exactly where it stopped: the same dataset as a run never interrupted.
    collect(clean_dir, "point-robot", RESUME)
    assert_same_dataset(killed_dir / "point-robot", clean_dir / "point-robot")


def test_same_seed_same_dataset(tmp_path):
    collect(tmp_path / "a")
    collect(tmp_path / "b")
    assert_same_dataset(tmp_path / "a" / "point-robot", tmp_path / "b" / "point-robot")
    # A replay capacity above the run's steps (as the cpu presets' below the reference's caps) changes nothing.
    collect(tmp_path / "large_replay", "point-robot", TINY | {"--buffer-size": 100_000})
    assert_same_dataset(tmp_path / "a" / "point-robot", tmp_path / "large_replay" / "point-robot")
    collect(tmp_path / "c", "point-robot", TINY, "--seed", "1")
    _, data_a = omrl_envs.load_dataset(tmp_path / "a" / "point-robot", "point-robot")
    _, data_c = omrl_envs.load_dataset(tmp_path / "c" / "point-robot", "point-robot")
    assert not np.array_equal(data_a[0]["actions"], data_c[0]["actions"])
    manifest = json.loads((tmp_path / "c" / "point-robot" / omrl_envs.MANIFEST).read_text())
    assert manifest["seed"] == 1


def test_learning_signal(tmp_path):
    """A short run clearly beats uniform random actions (-20.4) and the task-blind optimum (-15.1) on Point-Robot."""
    settings = TINY | {"--total-steps": 1300, "--first-checkpoint": 200, "--checkpoint-every": 100}
    settings |= {"--hidden-dim": 32, "--batch-size": 64, "--learning-rate": 3e-3}
    collect(tmp_path, "point-robot", settings)
    manifest = json.loads((tmp_path / "point-robot" / omrl_envs.MANIFEST).read_text())
    first, last = (
        manifest["checkpoint_returns_mean"]["all_tasks"][0],
        manifest["checkpoint_returns_mean"]["all_tasks"][-1],
    )
    assert last > -10 and last > first + 5, (first, last)


@pytest.fixture(scope="module")
def collect_sac():
    return load_script("collect_sac.py", "collect_sac_module")


def test_probe_of_two_tasks(tmp_path):
    """--tasks 5 2: only tasks 2 and 5 (sorted), under their real ids everywhere; the training scripts refuse it."""
    proc = collect(tmp_path, "point-robot", TINY, "--tasks", "5", "2")
    dataset_dir = tmp_path / "point-robot"
    manifest, data = check_dataset(dataset_dir, "point-robot", TINY, probe=[2, 5])
    assert manifest[omrl_envs.PROBE_KEY] == [2, 5] and manifest["settings"]["tasks"] == [2, 5]
    assert manifest["transitions_per_task"] == [3 * 3 * 20] * 2
    returns = manifest["checkpoint_returns"]
    means = manifest["checkpoint_returns_mean"]
    assert means["test_tasks"] == returns["2"]  # task 2 is the probe's only test task
    assert np.allclose(means["all_tasks"], np.mean([returns["2"], returns["5"]], axis=0))
    for task, arrays in data.items():  # each learner stepped its own task's env: rewards are -|s' - its goal|
        goal = omrl_envs.task_list("point-robot")[task]["goal"]
        distance = np.linalg.norm(arrays["next_observations"] - np.float32(goal), axis=1)
        np.testing.assert_allclose(arrays["rewards"], -distance, rtol=1e-5, err_msg=f"task {task}")

    # The table: the means and a column per probed task, in the manifest's numbers.
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["checkpoint", "all", "tasks", "test", "tasks", "task", "2", "task", "5"]
    for i, (line, checkpoint) in enumerate(zip(lines[1:4], expected_checkpoints(TINY), strict=True)):
        expected = [checkpoint, means["all_tasks"][i], means["test_tasks"][i], returns["2"][i], returns["5"][i]]
        assert np.allclose([float(x) for x in line.split()], expected, atol=0.006), line
    assert "a probe of tasks [2, 5]" in lines[4]

    proc = run_script("select.py", "--env-id", "point-robot", "--data-dir", tmp_path, "--runs-dir", tmp_path / "runs",
                      *SELECT_TINY, check=False, timeout=300)  # fmt: skip
    one_line_error(proc, f"{dataset_dir} is a probe of tasks [2, 5]", "not a dataset of all 40", "without --tasks")
    assert not (tmp_path / "runs").exists()


def test_ant_goal_probe_without_test_tasks(tmp_path, collect_sac):
    """A probe of train tasks only (test means null, "-" in the table): reset seeds are the real tasks' (its checkpoint
    episode starts where a full collection's does), and ant_goal_diagnosis.py reads it, reporting its tasks only."""
    proc = collect(tmp_path, "ant-goal", TINY_MUJOCO, "--tasks", "3", "1")
    dataset_dir = tmp_path / "ant-goal"
    manifest, data = check_dataset(dataset_dir, "ant-goal", TINY_MUJOCO, probe=[1, 3])
    mean = manifest["checkpoint_returns_mean"]["all_tasks"][0]
    assert manifest["checkpoint_returns_mean"]["test_tasks"] is None
    assert proc.stdout.splitlines()[1].split()[:3] == ["40", f"{mean:.2f}", "-"]
    for task, arrays in data.items():
        seed = collect_sac.derived_seed(0, collect_sac.ROLLOUT_STREAM, task, 40, 0)  # checkpoint 40, episode 0
        start = omrl_envs.make_env("ant-goal", task).reset(seed=seed)[0].astype(np.float32)
        np.testing.assert_array_equal(arrays["observations"][0], start, err_msg=f"task {task}")

    out = run_script("benchmarks/ant_goal_diagnosis.py", "--data-dir", tmp_path, "data", timeout=300).stdout
    assert "a probe of tasks [1, 3] (test tasks among them: [])" in out.splitlines()[0]
    rows = [line for line in out.splitlines() if line.startswith("| 40 ")]
    assert [r.split(" | ")[:2] for r in rows] == [["| 40", "all (2 episodes)"]]  # no test task: no test row


def test_replay_capacity_fits_64_gb_at_every_preset(collect_sac):
    """Humanoid's reference replay is capped (40 x 1M transitions of 2,860 bytes would be 114 GB); every other
    family and preset keeps every step, as the reference, and fits too."""
    for env_id in omrl_envs.ENV_IDS:
        family = omrl_envs.FAMILIES[env_id]
        transition_bytes = (2 * family.obs_dim + family.act_dim + 2) * 4  # s, a, r, s', not_done in float32
        for preset in ("cpu", "reference"):
            cfg = collect_sac.resolve_settings(collect_sac.Args(env_id=env_id, preset=preset))
            assert omrl_envs.NUM_TASKS * cfg.buffer_size * transition_bytes < 40e9, (env_id, preset)
            if (env_id, preset) != ("humanoid-dir", "reference"):
                assert cfg.buffer_size == cfg.total_steps, (env_id, preset)
    humanoid = collect_sac.resolve_settings(collect_sac.Args(env_id="humanoid-dir", preset="reference"))
    assert humanoid.buffer_size == 300_000 and humanoid.total_steps == 1_000_000
    override = collect_sac.Args(env_id="humanoid-dir", preset="reference", buffer_size=10)
    assert collect_sac.resolve_settings(override).buffer_size == 10


def per_task(name, tensor, num_tasks):
    """Task slices of a parameter: critics are ensembles of 2 x tasks members (Q1 of every task, then Q2)."""
    if name.startswith("critic"):
        return tensor.view(2, num_tasks, *tensor.shape[1:]).transpose(0, 1)
    return tensor


def test_learners_are_independent(collect_sac):
    """Changing task 0's minibatch leaves the other tasks' networks, temperatures and optimiser states unchanged."""
    num_tasks, obs_dim, act_dim, batch_size = 3, 2, 2, 32
    torch.manual_seed(0)
    learner = collect_sac.BatchedSAC(num_tasks, obs_dim, act_dim, 16, 1e-3, torch.device("cpu"))
    rng = np.random.default_rng(0)
    batch = {
        "observations": rng.normal(size=(num_tasks, batch_size, obs_dim)),
        "actions": rng.uniform(-1, 1, size=(num_tasks, batch_size, act_dim)),
        "rewards": rng.normal(size=(num_tasks, batch_size)),
        "next_observations": rng.normal(size=(num_tasks, batch_size, obs_dim)),
        "not_dones": np.ones((num_tasks, batch_size)),
    }
    batch = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in batch.items()}
    changed = {k: v.clone() for k, v in batch.items()}
    changed["rewards"][0] += 5.0
    changed["observations"][0] = -changed["observations"][0]

    results = []
    for data in (batch, changed):
        copy = collect_sac.BatchedSAC(num_tasks, obs_dim, act_dim, 16, 1e-3, torch.device("cpu"))
        copy.load_full_state(learner.full_state())
        generator = torch.Generator().manual_seed(0)
        for _ in range(3):  # covers a target-network update (every 2) and Adam's moments
            copy.update(data, generator)
        results.append(copy)
    original, modified = (dict(r.state_dict()) for r in results)
    assert set(original) >= {"log_alpha", "actor.net.0.weight", "critic.net.0.weight", "critic_target.net.4.bias"}
    for name in original:
        a, b = per_task(name, original[name], num_tasks), per_task(name, modified[name], num_tasks)
        assert torch.equal(a[1:], b[1:]), name
        assert not torch.equal(a[0], b[0]), name
    for module, optimizer in (("actor", "actor_optimizer"), ("critic", "critic_optimizer")):
        names = [f"{module}.{n}" for n, _ in getattr(results[0], module).named_parameters()]
        states = [getattr(r, optimizer).state_dict()["state"] for r in results]
        for index, name in enumerate(names):
            for moment in ("exp_avg", "exp_avg_sq"):
                a, b = (per_task(name, state[index][moment], num_tasks) for state in states)
                assert torch.equal(a[1:], b[1:]), (name, moment)


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--env-id", "cheetah-speed"], "unknown env id 'cheetah-speed'"),
        (["--preset", "gpu"], "unknown --preset 'gpu'"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be positive"),
        (["--random-steps", "6000"], "--random-steps must be between 0 and --total-steps"),
        (["--first-checkpoint", "2250"], "--first-checkpoint must be a multiple of --checkpoint-every"),
        (["--first-checkpoint", "5000"], "--first-checkpoint must be below --total-steps"),
        (["--tasks", "40"], "--tasks must be task indices in [0, 40) (got [40])"),
        (["--tasks", "3", "-1"], "--tasks must be task indices in [0, 40) (got [-1])"),
        (["--tasks", "3", "7", "3"], "--tasks must not repeat a task (got [3] more than once)"),
        (["--tasks"], "--tasks needs at least one task index"),
    ],
)
def test_bad_input_is_one_line(tmp_path, flags, fragment):
    proc = run_script("collect_sac.py", "--data-dir", tmp_path, "--runs-dir", tmp_path / "runs", *flags, check=False,
                      timeout=120)  # fmt: skip
    one_line_error(proc, fragment)
    assert not (tmp_path / "point-robot").exists()
