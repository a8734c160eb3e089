"""Our offline datasets as Minari datasets (Farama's format for offline RL) and back, bit for bit.

    python minari_datasets.py export --env-id point-robot                          # data/point-robot/ -> Minari
    python minari_datasets.py import --env-id point-robot --data-dir from-minari   # Minari -> from-minari/point-robot/

One Minari dataset per task, `omrl/<env-id>/task-XX-v0` (XX = 00 ... 39), in the namespace `omrl/<env-id>`, rather
than one dataset with the task in each episode's metadata: a Minari dataset has one env spec, and per task it is the
registered gymnasium id `omrl/<env-id>-v0` with `task_index: XX` in its kwargs, so `recover_environment()` builds
that very task (one dataset could only name the family, and a user would have to set the task by hand); meta-RL reads
data task by task (a meta-batch draws from a few train tasks; the offline protocol reads test tasks alone), as our
layout stores it, one file per task. Each dataset keeps:
  - the episodes in the task file's row order, `terminations` and `truncations` as stored (not merged); an episode's
    observations are its `observations` then its last `next_observations` (Minari stores each state once);
  - in each episode's metadata, our `episode` id and its `checkpoint` (the SAC step of the behaviour policy);
  - in the dataset's metadata, under "omrl": the task index and parameters, the SHA-256 of this task's arrays, the
    family's manifest (collection settings, seed, code version, checkpoint returns) and its fingerprint
    (omrl_envs.dataset_fingerprint: the content hash over all 40 tasks); the namespace's metadata holds the latter two.
`import` rebuilds the 40 task files and the manifest; it checks each task's hash, then the content hash of the whole,
against those recorded at export, and writes the manifest (which makes the dataset loadable) only when all agree.
Where the datasets live: --minari-dir, else Minari's own default ($MINARI_DATASETS_PATH, else ~/.minari/datasets).
Needs the optional requirements: pip install -r requirements-extras.txt (minari with h5py).
"""

import dataclasses
import importlib.metadata
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import tyro

import omrl_envs

NAMESPACE = "omrl"
VERSION = 0
ALGORITHM = "SAC checkpoints, one learner per task (collect_sac.py)"
NAMESPACE_DESCRIPTION = (
    "SELECT's offline meta-RL datasets of {env_id}, one per task: task-00-v0 ... task-39-v0 (test tasks 2, 6, ..., "
    "38); the family's manifest and content hash in this metadata"
)
TASK_DESCRIPTION = (
    "episodes of a SAC learner of this task at a series of checkpoints (episode metadata: episode id, checkpoint); "
    "the task's parameters and the family's manifest and content hash in the metadata under 'omrl'"
)


@dataclass
class Export:
    """write <data-dir>/<env-id>/ as the Minari datasets omrl/<env-id>/task-XX-v0, one per task"""

    env_id: str = "point-robot"
    """task family: one of omrl_envs.ENV_IDS"""
    data_dir: str = "data"
    """the dataset is read from <data-dir>/<env-id>/ (written by collect_sac.py)"""
    minari_dir: str | None = None
    """root of the Minari datasets (None: Minari's, $MINARI_DATASETS_PATH or else ~/.minari/datasets)"""
    overwrite: bool = False
    """if toggled, replace the family's Minari datasets that are there"""


@dataclass
class Import:
    """read the Minari datasets omrl/<env-id>/task-XX-v0 back into <data-dir>/<env-id>/ (the same content hash)"""

    env_id: str = "point-robot"
    """task family: one of omrl_envs.ENV_IDS"""
    data_dir: str = "data"
    """the dataset is written to <data-dir>/<env-id>/"""
    minari_dir: str | None = None
    """root of the Minari datasets (None: Minari's, $MINARI_DATASETS_PATH or else ~/.minari/datasets)"""
    overwrite: bool = False
    """if toggled, replace a dataset that is in <data-dir>/<env-id>/"""


def fail(message: str):
    """Bad input: one line on stderr, exit status 1, no traceback."""
    raise SystemExit(f"minari_datasets.py: error: {message}")


def check_minari_installed() -> None:
    try:
        import minari  # noqa: F401
    except ImportError:
        fail("Minari is not installed: pip install -r requirements-extras.txt")


def family_namespace(env_id: str) -> str:
    return f"{NAMESPACE}/{env_id}"


def task_dataset_id(env_id: str, task_index: int) -> str:
    return f"{family_namespace(env_id)}/task-{task_index:02d}-v{VERSION}"


def task_content_hash(task: dict) -> str:
    """SHA-256 of one task's arrays, as omrl_envs.DatasetHasher hashes each task of a dataset."""
    hasher = omrl_envs.DatasetHasher()
    hasher.update(task)
    return hasher.digest.hexdigest()


def episode_bounds(task: dict, where: str) -> list[tuple[int, int]]:
    """(first row, stop row) of each episode in the file's order. An episode's rows must be contiguous and chain, each
    next observation the next row's observation bit for bit: Minari stores an episode's states once."""
    change = (np.diff(task["episode"]) != 0) | (np.diff(task["checkpoint"]) != 0)
    starts = np.concatenate([[0], np.flatnonzero(change) + 1])
    stops = np.append(starts[1:], len(task["rewards"]))
    pairs, counts = np.unique(
        np.stack([task["checkpoint"][starts], task["episode"][starts]]), axis=1, return_counts=True
    )
    if counts.max() > 1:
        checkpoint, episode = pairs[:, counts > 1][:, 0]
        fail(f"{where}: episode {episode} of checkpoint {checkpoint} is not in contiguous rows (Minari's episodes are)")
    bits = {key: task[key].view(np.uint32) for key in ("observations", "next_observations")}
    for start, stop in zip(starts, stops, strict=True):
        if not np.array_equal(bits["next_observations"][start : stop - 1], bits["observations"][start + 1 : stop]):
            episode = task["episode"][start]
            fail(f"{where}: episode {episode}: a next observation differs from the next row's observation")
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def export_family(args: Export) -> None:
    from minari.namespace import create_namespace
    from minari.storage import get_dataset_path

    env_id, dataset_dir = args.env_id, Path(args.data_dir) / args.env_id
    try:
        manifest = omrl_envs.read_manifest(dataset_dir, env_id)
    except omrl_envs.DatasetError as e:
        fail(str(e))
    if manifest.get("complete") is False:
        fail(f"{dataset_dir / omrl_envs.MANIFEST}: dataset is incomplete (collection was interrupted)")
    namespace_dir = get_dataset_path(family_namespace(env_id))
    if namespace_dir.exists():
        if not args.overwrite:
            fail(f"{namespace_dir} holds Minari datasets of {env_id}: pass --overwrite to replace them")
        shutil.rmtree(namespace_dir)
    create_namespace(family_namespace(env_id), description=NAMESPACE_DESCRIPTION.format(env_id=env_id))
    try:
        fingerprint = write_task_datasets(env_id, dataset_dir, manifest)
    except BaseException:  # a bad task file, or an interrupt: no half-written family is left behind
        shutil.rmtree(namespace_dir, ignore_errors=True)
        raise
    print(
        f"wrote {omrl_envs.NUM_TASKS} Minari datasets {task_dataset_id(env_id, 0)} ... "
        f"{task_dataset_id(env_id, omrl_envs.NUM_TASKS - 1)} in {namespace_dir} "
        f"(content {fingerprint['content_hash'][:12]})"
    )


def write_task_datasets(env_id: str, dataset_dir: Path, manifest: dict) -> dict:
    """One Minari dataset per task, then the family's manifest and fingerprint in each; returns the fingerprint."""
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.namespace import update_namespace_metadata

    requirements = [f"gymnasium=={importlib.metadata.version('gymnasium')}"]  # checked by recover_environment()
    if env_id != "point-robot":
        requirements.append(f"mujoco=={importlib.metadata.version('mujoco')}")  # trajectories differ across versions
    spec = gym.spec(omrl_envs.gym_id(env_id))
    hasher = omrl_envs.DatasetHasher()
    for t in range(omrl_envs.NUM_TASKS):
        try:
            task = omrl_envs.read_task_data(dataset_dir, env_id, t)
        except omrl_envs.DatasetError as e:
            fail(str(e))
        hasher.update(task)
        bounds = episode_bounds(task, str(omrl_envs.task_file(dataset_dir, t)))
        episodes = [
            EpisodeBuffer(
                id=i,
                observations=np.concatenate([task["observations"][a:b], task["next_observations"][b - 1 : b]]),
                actions=task["actions"][a:b],
                rewards=task["rewards"][a:b],
                terminations=task["terminations"][a:b].astype(bool),
                truncations=task["truncations"][a:b].astype(bool),
            )
            for i, (a, b) in enumerate(bounds)
        ]
        split = "test" if t in omrl_envs.TEST_TASKS else "train"
        with warnings.catch_warnings():  # Minari asks for an author, an e-mail and a code link, which we cannot know
            warnings.simplefilter("ignore", UserWarning)
            dataset = minari.create_dataset_from_buffers(
                task_dataset_id(env_id, t),
                episodes,
                env=dataclasses.replace(spec, kwargs={**spec.kwargs, "task_index": t}),
                algorithm_name=ALGORITHM,
                description=f"{env_id}, {split} task {t}: {TASK_DESCRIPTION}",
                requirements=requirements,
            )
        dataset.storage.update_episode_metadata(
            {"episode": int(task["episode"][a]), "checkpoint": int(task["checkpoint"][a])} for a, _ in bounds
        )
        record = {"env_id": env_id, "task_index": t, "task": omrl_envs.task_description(env_id, t)}
        dataset.storage.update_metadata({"omrl": record | {"task_content_hash": task_content_hash(task)}})
    # The family's provenance, once every task is hashed: in each dataset (one alone says where it comes from)
    fingerprint = hasher.fingerprint(manifest)
    for t in range(omrl_envs.NUM_TASKS):
        storage = minari.load_dataset(task_dataset_id(env_id, t)).storage
        storage.update_metadata({"omrl": storage.metadata["omrl"] | {"manifest": manifest, "fingerprint": fingerprint}})
    update_namespace_metadata(
        family_namespace(env_id),
        description=NAMESPACE_DESCRIPTION.format(env_id=env_id),
        manifest=manifest,
        fingerprint=fingerprint,
    )
    return fingerprint


def import_family(args: Import) -> None:
    import minari
    from minari.storage import get_dataset_path

    env_id, dataset_dir = args.env_id, Path(args.data_dir) / args.env_id
    if (dataset_dir / omrl_envs.MANIFEST).is_file():
        if not args.overwrite:
            fail(f"{dataset_dir} already holds a dataset; pass --overwrite to replace it, or another --data-dir")
        (dataset_dir / omrl_envs.MANIFEST).unlink()  # first: a failure below never leaves a loadable mix
    hasher, manifest, fingerprint = omrl_envs.DatasetHasher(), None, None
    for t in range(omrl_envs.NUM_TASKS):
        dataset_id = task_dataset_id(env_id, t)
        try:
            dataset = minari.load_dataset(dataset_id)
        except FileNotFoundError:
            fail(f"no Minari dataset {dataset_id} in {get_dataset_path()}; write it with: "
                 f"python minari_datasets.py export --env-id {env_id}")  # fmt: skip
        record = dataset.storage.metadata.get("omrl") or {}
        if record.get("env_id") != env_id or record.get("task_index") != t or "fingerprint" not in record:
            fail(f"{dataset_id}: not one of ours (no complete 'omrl' metadata for {env_id} task {t})")
        if manifest is None:
            manifest, fingerprint = record["manifest"], record["fingerprint"]
        elif record["fingerprint"]["content_hash"] != fingerprint["content_hash"]:
            fail(f"{dataset_id}: exported from another dataset than {task_dataset_id(env_id, 0)}")
        episodes = list(dataset.iterate_episodes())
        metadata = list(dataset.storage.get_episode_metadata(range(dataset.total_episodes)))
        task = {
            "observations": np.concatenate([e.observations[:-1] for e in episodes]),
            "actions": np.concatenate([e.actions for e in episodes]),
            "rewards": np.concatenate([e.rewards for e in episodes]),
            "next_observations": np.concatenate([e.observations[1:] for e in episodes]),
            "terminations": np.concatenate([e.terminations for e in episodes]),
            "truncations": np.concatenate([e.truncations for e in episodes]),
        }
        task = {key: value.astype(np.float32) for key, value in task.items()}
        for key in omrl_envs.ID_KEYS:
            task[key] = np.concatenate(
                [np.full(len(e.rewards), m[key], np.int64) for e, m in zip(episodes, metadata, strict=True)]
            )
        if task_content_hash(task) != record["task_content_hash"]:
            fail(f"{dataset_id}: its arrays differ from those exported (SHA-256 {record['task_content_hash'][:12]})")
        hasher.update(task)
        try:
            omrl_envs.write_task_data(dataset_dir, env_id, t, task)
        except omrl_envs.DatasetError as e:
            fail(str(e))
    if hasher.fingerprint(manifest)["content_hash"] != fingerprint["content_hash"]:
        fail(f"the {env_id} tasks read back differ from those exported: content {fingerprint['content_hash'][:12]}")
    omrl_envs.write_manifest(dataset_dir, manifest)  # last: the dataset is loadable from here on
    print(f"wrote {dataset_dir} ({omrl_envs.NUM_TASKS} tasks, content {fingerprint['content_hash'][:12]})")


if __name__ == "__main__":
    args = tyro.cli(Export | Import)
    try:
        omrl_envs.get_family(args.env_id)
    except omrl_envs.EnvIdError as e:
        fail(str(e))
    if args.minari_dir is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(args.minari_dir).resolve())  # read by Minari at each call
    check_minari_installed()
    if isinstance(args, Export):
        export_family(args)
    else:
        import_family(args)
