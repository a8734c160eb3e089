"""minari_datasets.py: our dataset -> Minari (one dataset per task) -> our dataset, bit for bit at tiny size; what a
Minari user sees (env spec, episode and dataset metadata); one-line errors."""

import json
import shutil

import numpy as np
import pytest
from conftest import run_script
from test_collect_sac import one_line_error

import omrl_envs

EPISODES = ((100, 0), (100, 1), (200, 2), (200, 3))  # (checkpoint, episode id) of each task's episodes, in file order


def write_tiny_dataset(data_dir, env_id: str, seed: int = 0):
    """Uniform random actions, each episode run to its end (hopper-rand-params: a termination, the health check;
    point-robot: the time limit), with a manifest carrying collection provenance as collect_sac.py's does."""
    rng = np.random.default_rng(seed)
    dataset_dir = data_dir / env_id
    for t in range(omrl_envs.NUM_TASKS):
        env = omrl_envs.make_env(env_id, t)
        columns = {k: [] for k in omrl_envs.FLOAT_KEYS + omrl_envs.ID_KEYS}
        for checkpoint, episode in EPISODES:
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            done = False
            while not done:
                action = rng.uniform(-1, 1, env.action_space.shape)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                for key, value in zip(
                    omrl_envs.FLOAT_KEYS + omrl_envs.ID_KEYS,
                    (obs, action, reward, next_obs, terminated, truncated, checkpoint, episode),
                    strict=True,
                ):
                    columns[key].append(value)
                obs, done = next_obs, terminated or truncated
        data = {k: np.asarray(columns[k], np.float32) for k in omrl_envs.FLOAT_KEYS}
        data |= {k: np.asarray(columns[k], np.int64) for k in omrl_envs.ID_KEYS}
        omrl_envs.write_task_data(dataset_dir, env_id, t, data)
    settings = {"env_id": env_id, "preset": "tiny", "total_steps": 300, "episodes_per_checkpoint": 2}
    manifest = omrl_envs.make_manifest(
        env_id, seed=seed, settings=settings, code_version={"git_commit": "0" * 40}, checkpoints=[100, 200],
        complete=True,
    )  # fmt: skip
    omrl_envs.write_manifest(dataset_dir, manifest)
    return dataset_dir


def minari_tool(command: str, env_id: str, data_dir, minari_dir, *extra, check=True):
    return run_script(
        "minari_datasets.py", command, "--env-id", env_id, "--data-dir", data_dir, "--minari-dir", minari_dir, *extra,
        check=check, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("env_id", ["point-robot", "hopper-rand-params"])
def test_round_trip_through_minari_is_bit_identical(tmp_path, monkeypatch, env_id):
    minari = pytest.importorskip("minari")
    from minari.namespace import get_namespace_metadata

    source = write_tiny_dataset(tmp_path / "data", env_id)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))  # the tool's default root, as Minari's
    run_script("minari_datasets.py", "export", "--env-id", env_id, "--data-dir", tmp_path / "data")
    minari_tool("import", env_id, tmp_path / "back", tmp_path / "minari")

    manifest, tasks = omrl_envs.load_dataset(source, env_id)
    manifest_back, tasks_back = omrl_envs.load_dataset(tmp_path / "back" / env_id, env_id)
    assert manifest_back == manifest
    for t in range(omrl_envs.NUM_TASKS):
        assert set(tasks_back[t]) == set(tasks[t])
        for key, array in tasks[t].items():
            assert tasks_back[t][key].dtype == array.dtype and tasks_back[t][key].shape == array.shape
            assert tasks_back[t][key].tobytes() == array.tobytes(), (t, key)
    fingerprint = omrl_envs.dataset_fingerprint(manifest, tasks)
    assert omrl_envs.dataset_fingerprint(manifest_back, tasks_back) == fingerprint
    terminations, truncations = (sum(tasks[t][key].sum() for t in tasks) for key in ("terminations", "truncations"))
    assert terminations > 0 if env_id == "hopper-rand-params" else truncations > 0 == terminations  # both kinds of end

    # What a Minari user sees: one dataset per task, its env spec the registered id at that task
    dataset = minari.load_dataset(f"omrl/{env_id}/task-06-v0")
    assert dataset.env_spec.id == f"omrl/{env_id}-v0" and dataset.env_spec.kwargs["task_index"] == 6
    assert dataset.env_spec.max_episode_steps == omrl_envs.FAMILIES[env_id].horizon
    assert dataset.recover_environment().unwrapped.task_index == 6
    episodes = list(dataset.iterate_episodes())
    metadata = list(dataset.storage.get_episode_metadata(range(dataset.total_episodes)))
    assert [(m["checkpoint"], m["episode"]) for m in metadata] == list(EPISODES)
    assert dataset.total_steps == len(tasks[6]["rewards"])
    for key in ("terminations", "truncations"):
        flags = np.concatenate([getattr(e, key) for e in episodes])
        assert flags.dtype == bool and np.array_equal(flags, tasks[6][key] == 1)
    record = dataset.storage.metadata["omrl"]
    assert record["task_index"] == 6 and record["task"] == omrl_envs.task_description(env_id, 6)
    assert record["manifest"] == manifest and record["fingerprint"] == json.loads(json.dumps(fingerprint))
    assert record["manifest"]["settings"]["preset"] == "tiny" and record["fingerprint"]["content_hash"]
    assert get_namespace_metadata(f"omrl/{env_id}")["fingerprint"] == record["fingerprint"]
    assert len(list((tmp_path / "minari" / "omrl" / env_id).glob("task-*-v0"))) == omrl_envs.NUM_TASKS


def test_refusals_and_a_changed_minari_dataset_are_one_line_errors(tmp_path):
    pytest.importorskip("minari")
    h5py = pytest.importorskip("h5py")
    env_id, data, minari_dir, back = "point-robot", tmp_path / "data", tmp_path / "minari", tmp_path / "back"
    write_tiny_dataset(data, env_id)
    minari_tool("export", env_id, data, minari_dir)
    minari_tool("import", env_id, back, minari_dir)
    proc = minari_tool("import", env_id, back, minari_dir, check=False)
    one_line_error(proc, "already holds a dataset", "--overwrite")
    shutil.rmtree(minari_dir / "omrl" / env_id / "task-39-v0")
    proc = minari_tool("import", env_id, back, minari_dir, "--overwrite", check=False)
    one_line_error(proc, "no Minari dataset omrl/point-robot/task-39-v0", "minari_datasets.py export")

    proc = minari_tool("export", env_id, data, minari_dir, check=False)
    one_line_error(proc, "holds Minari datasets of point-robot", "--overwrite")
    minari_tool("export", env_id, data, minari_dir, "--overwrite")
    minari_tool("import", env_id, back, minari_dir, "--overwrite")
    omrl_envs.load_dataset(back / env_id, env_id)

    # One reward changed inside a Minari dataset: the import names that dataset and leaves nothing loadable
    with h5py.File(minari_dir / "omrl" / env_id / "task-07-v0" / "data" / "main_data.hdf5", "a") as f:
        f["episode_1"]["rewards"][3] += 1.0
    proc = minari_tool("import", env_id, back, minari_dir, "--overwrite", check=False)
    one_line_error(proc, "omrl/point-robot/task-07-v0", "differ from those exported")
    assert not (back / env_id / omrl_envs.MANIFEST).exists()

    # An episode split in two (rows of another episode between): export refuses and leaves no datasets behind
    task = omrl_envs.read_task_data(data / env_id, env_id, 5)
    order = np.r_[0:5, 25:30, 5:25, 30 : len(task["rewards"])]
    omrl_envs.write_task_data(data / env_id, env_id, 5, {k: v[order] for k, v in task.items()})
    proc = minari_tool("export", env_id, data, tmp_path / "minari-new", check=False)
    one_line_error(proc, "task_05.npz", "episode 0 of checkpoint 100", "not in contiguous rows")
    assert not (tmp_path / "minari-new" / "omrl" / env_id).exists()


def test_help_documents_every_option():
    from conftest import load_script

    tool = load_script("minari_datasets.py", "minari_datasets")
    for command, options in (("export", tool.Export), ("import", tool.Import)):
        help_text = run_script("minari_datasets.py", command, "--help").stdout
        for field in options.__dataclass_fields__:
            assert f"--{field.replace('_', '-')}" in help_text, (command, field)


def test_without_minari_installed_is_one_line(tmp_path):
    code = (
        "import runpy, sys\n"
        "sys.modules['minari'] = None  # as if not installed\n"
        f"sys.argv = ['minari_datasets.py', 'export', '--data-dir', {str(tmp_path)!r}]\n"
        "runpy.run_path('minari_datasets.py', run_name='__main__')\n"
    )
    one_line_error(run_script("-c", code, check=False), "Minari is not installed", "requirements-extras.txt")
