"""The dataset format: round trip, and a one-line error naming the file for each kind of bad input."""

import hashlib
import json

import numpy as np
import pytest

import omrl_envs
from omrl_envs import DatasetError, load_dataset, make_manifest, read_task_data, write_manifest, write_task_data

ENV_ID = "point-robot"


def fake_task_data(n=50, obs_dim=2, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    truncations = np.zeros(n, np.float32)
    truncations[19::20] = 1.0
    return {
        "observations": obs,
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": (obs + 0.1).astype(np.float32),
        "terminations": np.zeros(n, np.float32),
        "truncations": truncations,
        "checkpoint": np.repeat([2200, 2400], [n // 2, n - n // 2]).astype(np.int64),
        "episode": (np.arange(n) // 20).astype(np.int64),
    }


@pytest.fixture
def dataset(tmp_path):
    directory = tmp_path / ENV_ID
    for i in range(omrl_envs.NUM_TASKS):
        write_task_data(directory, ENV_ID, i, fake_task_data(seed=i))
    write_manifest(directory, make_manifest(ENV_ID, seed=0, checkpoints=[2200, 2400], complete=True))
    return directory


def assert_one_line_error(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_round_trip(dataset):
    manifest, data = load_dataset(dataset, ENV_ID)
    assert manifest["env_id"] == ENV_ID and manifest["test_tasks"] == list(omrl_envs.TEST_TASKS)
    assert manifest["tasks"][5]["goal"] == list(omrl_envs.task_list(ENV_ID)[5]["goal"])
    for i in (0, 17, 39):
        expected = fake_task_data(seed=i)
        assert set(data[i]) == set(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(data[i][key], value)
            assert data[i][key].dtype == value.dtype
    assert not list(dataset.glob("*.tmp"))  # atomic writes leave no temporaries


def test_rand_params_manifest_round_trip(tmp_path):
    manifest = make_manifest("hopper-rand-params")
    write_manifest(tmp_path, manifest)
    loaded = omrl_envs.read_manifest(tmp_path, "hopper-rand-params")
    np.testing.assert_array_equal(
        loaded["tasks"][3]["body_mass"], omrl_envs.task_list("hopper-rand-params")[3]["body_mass"]
    )


def test_missing_manifest(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path / "nowhere", ENV_ID)
    assert_one_line_error(e, "manifest.json", "python collect_sac.py --env-id point-robot")


def test_corrupt_manifest(dataset):
    (dataset / "manifest.json").write_text('{"env_id": "point-robot", ')
    with pytest.raises(DatasetError) as e:
        load_dataset(dataset, ENV_ID)
    assert_one_line_error(e, "manifest.json", "corrupt manifest")


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda m: m.update(env_id="cheetah-vel"), "is for env 'cheetah-vel'"),
        (lambda m: m.update(test_tasks=list(range(30, 40))), "split differs"),
        (lambda m: m["tasks"][3].update(goal=[0.0, 1.0]), "task 3 differs"),
        (lambda m: m.update(tasks=m["tasks"][:39]), "must list 40 tasks"),
    ],
)
def test_inconsistent_manifest(dataset, change, fragment):
    manifest = json.loads((dataset / "manifest.json").read_text())
    change(manifest)
    write_manifest(dataset, manifest)
    with pytest.raises(DatasetError) as e:
        load_dataset(dataset, ENV_ID)
    assert_one_line_error(e, "manifest.json", fragment)


def test_missing_task_file(dataset):
    (dataset / "task_07.npz").unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset(dataset, ENV_ID)
    assert_one_line_error(e, "task_07.npz", "missing task file")


def test_corrupt_task_file(dataset):
    path = dataset / "task_03.npz"
    path.write_bytes(path.read_bytes()[:100])  # truncated, as after a crash without atomic writes
    with pytest.raises(DatasetError) as e:
        read_task_data(dataset, ENV_ID, 3)
    assert_one_line_error(e, "task_03.npz", "corrupt file")


def _bad(key, value):
    def change(data):
        if value is None:
            del data[key]
        else:
            data[key] = value(data[key])

    return change


@pytest.mark.parametrize(
    "change, fragment",
    [
        (_bad("rewards", None), "missing array 'rewards'"),
        (_bad("observations", lambda a: a[:, :1]), "observations has shape (50, 1), expected (50, 2)"),
        (_bad("actions", lambda a: a[:-1]), "actions has shape (49, 2)"),
        (_bad("rewards", lambda a: a.astype(np.float64)), "rewards has dtype float64, expected float32"),
        (_bad("episode", lambda a: a.astype(np.int32)), "episode has dtype int32, expected int64"),
        (_bad("actions", lambda a: a * 3), "actions outside [-1, 1]"),
        (_bad("rewards", lambda a: np.where(np.arange(len(a)) == 4, np.nan, a).astype(np.float32)), "NaN or Inf"),
        (_bad("terminations", lambda a: a + 0.5), "terminations must hold only 0 and 1"),
    ],
)
def test_invalid_task_data(tmp_path, change, fragment):
    data = fake_task_data()
    change(data)
    # The writer refuses it ...
    with pytest.raises(DatasetError) as e:
        write_task_data(tmp_path, ENV_ID, 0, data)
    assert_one_line_error(e, "task_00.npz", fragment)
    assert not (tmp_path / "task_00.npz").exists()
    # ... and the reader refuses a file that was written some other way.
    np.savez(tmp_path / "task_00.npz", **data)
    with pytest.raises(DatasetError) as e:
        read_task_data(tmp_path, ENV_ID, 0)
    assert_one_line_error(e, "task_00.npz", fragment)


def test_empty_task_data(tmp_path):
    data = {k: v[:0] for k, v in fake_task_data().items()}
    with pytest.raises(DatasetError) as e:
        write_task_data(tmp_path, ENV_ID, 0, data)
    assert_one_line_error(e, "no transitions")


def test_fingerprint_task_by_task_keeps_its_value(dataset):
    """DatasetHasher (task by task, as the loader reads) gives dataset_fingerprint's dict, whose content hash is the
    SHA-256 of every task's arrays in task and key order, as it always was (runs record it; checkpoints compare it)."""
    manifest, data = load_dataset(dataset, ENV_ID)
    digest = hashlib.sha256()
    for t in range(omrl_envs.NUM_TASKS):
        for key in omrl_envs.FLOAT_KEYS + omrl_envs.ID_KEYS:
            digest.update(np.ascontiguousarray(data[t][key]).tobytes())
    hasher = omrl_envs.DatasetHasher()
    for t in range(omrl_envs.NUM_TASKS):
        hasher.update(read_task_data(dataset, ENV_ID, t))
    fingerprint = hasher.fingerprint(manifest)
    assert fingerprint == omrl_envs.dataset_fingerprint(manifest, data)
    assert fingerprint["content_hash"] == digest.hexdigest()
    assert fingerprint["transitions_per_task"] == [50] * omrl_envs.NUM_TASKS and fingerprint["seed"] == 0
    keys = {"env_id", "seed", "settings", "code_version", "transitions_per_task", "content_hash", "checkpoint_returns"}
    assert set(fingerprint) == keys
    returns = {"all_tasks": [1, 2], "test_tasks": [-3, -1]}
    collected = manifest | {"checkpoints": [10, 20], "checkpoint_returns_mean": returns}
    assert hasher.fingerprint(collected)["checkpoint_returns"] == {"steps": [10, 20], "test_tasks": [-3, -1]}
    assert hasher.fingerprint(collected)["content_hash"] == fingerprint["content_hash"]  # quality is not identity


def test_task_length_and_its_errors(dataset):
    assert omrl_envs.read_task_length(dataset, ENV_ID, 5) == 50
    (dataset / "task_07.npz").unlink()
    with pytest.raises(DatasetError) as e:
        omrl_envs.read_task_length(dataset, ENV_ID, 7)
    assert_one_line_error(e, "task_07.npz", "missing task file")
    (dataset / "task_03.npz").write_bytes(b"not an npz file")
    with pytest.raises(DatasetError) as e:
        omrl_envs.read_task_length(dataset, ENV_ID, 3)
    assert_one_line_error(e, "task_03.npz", "corrupt file")
    data = fake_task_data()
    del data["rewards"]
    np.savez(dataset / "task_04.npz", **data)
    with pytest.raises(DatasetError) as e:
        omrl_envs.read_task_length(dataset, ENV_ID, 4)
    assert_one_line_error(e, "task_04.npz", "missing array 'rewards'")
