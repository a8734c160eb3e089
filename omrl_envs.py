"""Offline meta-RL environments: the seven task families, their task lists, and the dataset format.

This is the one module that `select.py`, `collect_sac.py` and every script in `baselines/` share.
Task definitions follow the CSRO benchmark (Gao et al., NeurIPS 2023; official code MoreanP/CSRO),
rebuilt on gymnasium 1.x and the official `mujoco` bindings (v5 models). The protocol is written
out in the benchmark specification; docs/families-and-datasets.md lists where v5 differs from the reference
simulators.

    env = make_env("cheetah-vel")          # TimeLimit at the family's horizon, actions in [-1, 1]
    env.unwrapped.set_task(TEST_TASKS[0])  # switch task in place: no rebuild
    obs, info = env.reset(seed=0)
    env = gymnasium.make("omrl/cheetah-vel-v0", task_index=6)  # the same env by its gymnasium id (registered on import)

Nothing here touches the global NumPy RNG: task lists come from `linspace` or a dedicated
`np.random.default_rng(seed)`, and episodes are seeded through `reset(seed=...)`.
Point-Robot is pure NumPy; MuJoCo is imported only when a MuJoCo family is built.
"""

import hashlib
import json
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import gymnasium as gym
import numpy as np

NUM_TASKS = 40
TEST_TASKS = tuple(int(i) for i in np.arange(0, NUM_TASKS, 4) + 2)  # 2, 6, ..., 38 ("interleaved")
TRAIN_TASKS = tuple(i for i in range(NUM_TASKS) if i not in TEST_TASKS)
RAND_PARAMS_SEED = 1234
RAND_PARAMS_FIELDS = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}


class EnvIdError(ValueError):
    """An env id that is not one of the seven families."""


class DatasetError(ValueError):
    """A dataset file that is missing, corrupt or inconsistent: the message names the file and the problem."""


# ------------------------------------------------------------------------------------------------
# Point-Robot: pure NumPy
# ------------------------------------------------------------------------------------------------
class PointRobotEnv(gym.Env):
    """2-D point that moves by its action; reward -||s' - g||_2 with the goal g hidden from the agent."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-0.1, 0.1, (2,), np.float64)
        self.tasks = task_list("point-robot")
        self.set_task(0)
        self._state = np.zeros(2)

    def set_task(self, index: int):
        self.task_index = int(index)
        self.goal = np.asarray(self.tasks[self.task_index]["goal"], dtype=np.float64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._state = np.zeros(2)
        return self._state.copy(), {}

    def step(self, action):
        self._state = self._state + np.asarray(action, dtype=np.float64)
        distance = float(np.linalg.norm(self._state - self.goal))
        return self._state.copy(), -distance, False, False, {"distance": distance}


# ------------------------------------------------------------------------------------------------
# MuJoCo families: thin subclasses of gymnasium's v5 environments. Imported lazily so that
# Point-Robot works without MuJoCo installed.
# ------------------------------------------------------------------------------------------------
@cache
def _mujoco_classes():
    import mujoco
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
    from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv
    from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

    class TaskMixin:
        env_id: str

        def set_task(self, index: int):
            self.task_index = int(index)
            self.task = self.tasks[self.task_index]

    class CheetahVelEnv(TaskMixin, HalfCheetahEnv):
        env_id = "cheetah-vel"

        def __init__(self):
            super().__init__(ctrl_cost_weight=0.05)
            self.tasks = task_list(self.env_id)
            self.set_task(0)

        def _initialize_simulation(self):
            """gymnasium's half_cheetah.xml asks the compiler for settotalmass="14", which mujoco 4.0 deprecates with
            a warning printed at every build. Compiled without it, then scaled as the warning advises (mj_setTotalmass,
            mj_setConst), and with the two statistics that the compiler derives from the scaled masses (mean body mass,
            mean diagonal inertia at qpos0) set as it sets them, the model is bit-identical to the XML's (tested)."""
            spec = mujoco.MjSpec.from_file(self.fullpath)
            total_mass = spec.compiler.settotalmass
            spec.compiler.settotalmass = -1.0  # off
            model = spec.compile()
            mujoco.mj_setTotalmass(model, total_mass)
            mujoco.mj_setConst(model, mujoco.MjData(model))
            model.stat.meanmass = _sequential_sum(model.body_mass[1:]) / (model.nbody - 1)
            model.stat.meaninertia = _sequential_sum(model.dof_M0) / model.nv  # dof_M0: diagonal of M at qpos0
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)  # as MujocoEnv's
            model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
            return model, mujoco.MjData(model)

        def step(self, action):
            obs, _, terminated, truncated, info = super().step(action)
            reward = -abs(info["x_velocity"] - self.task["velocity"]) + info["reward_ctrl"]
            return obs, reward, terminated, truncated, info

    class AntGoalEnv(TaskMixin, AntEnv):
        env_id = "ant-goal"

        def __init__(self):
            super().__init__(
                exclude_current_positions_from_observation=False,
                include_cfrc_ext_in_observation=False,
                terminate_when_unhealthy=False,
            )
            self.tasks = task_list(self.env_id)
            self.set_task(0)

        def step(self, action):
            obs, _, terminated, truncated, info = super().step(action)
            xy = np.array([info["x_position"], info["y_position"]])
            goal_cost = np.abs(xy - np.asarray(self.task["goal"])).sum()
            ctrl_cost = 0.1 * float(np.square(np.asarray(action, dtype=np.float64)).sum())
            reward = -goal_cost - ctrl_cost + info["reward_contact"]
            return obs, reward, terminated, truncated, info

    class DirectionMixin(TaskMixin):
        """Reward for velocity along the task's direction, plus v5's control, contact and survive terms."""

        forward_weight: float

        def step(self, action):
            obs, _, terminated, truncated, info = super().step(action)
            angle = self.task["direction"]
            velocity = math.cos(angle) * info["x_velocity"] + math.sin(angle) * info["y_velocity"]
            reward = (
                self.forward_weight * velocity + info["reward_ctrl"] + info["reward_contact"] + info["reward_survive"]
            )
            return obs, reward, terminated, truncated, info

    class AntDirEnv(DirectionMixin, AntEnv):
        env_id = "ant-dir"
        forward_weight = 1.0

        def __init__(self):
            super().__init__(include_cfrc_ext_in_observation=False)
            self.tasks = task_list(self.env_id)
            self.set_task(0)

    class HumanoidDirEnv(DirectionMixin, HumanoidEnv):
        env_id = "humanoid-dir"
        forward_weight = 1.25  # x/y velocities are those of the mass centre, as the reference

        def __init__(self):
            super().__init__()
            self.tasks = task_list(self.env_id)
            self.set_task(0)

    class RandParamsMixin(TaskMixin):
        """Physics parameters written in place into the MjModel; never compounded (each task is a full set)."""

        def _init_rand_params(self):
            self.model.opt.timestep = 0.004  # dt 0.016, as rand_param_envs' XML
            self.default_params = {f: getattr(self.model, f).copy() for f in RAND_PARAMS_FIELDS}
            self.tasks = task_list(self.env_id)
            self.set_task(0)

        def set_task(self, index: int):
            super().set_task(index)
            for field in RAND_PARAMS_FIELDS:
                getattr(self.model, field)[:] = self.task[field]

    class HopperRandParamsEnv(RandParamsMixin, HopperEnv):
        env_id = "hopper-rand-params"

        def __init__(self):
            super().__init__()
            self._init_rand_params()

    class WalkerRandParamsEnv(RandParamsMixin, Walker2dEnv):
        env_id = "walker-rand-params"

        def __init__(self):
            super().__init__(xml_file="walker2d.xml")  # feet friction 0.9 / 1.9, as the reference
            self._init_rand_params()

    return {
        cls.env_id: cls
        for cls in (CheetahVelEnv, AntGoalEnv, AntDirEnv, HumanoidDirEnv, HopperRandParamsEnv, WalkerRandParamsEnv)
    }


def _sequential_sum(values) -> float:
    """Left-to-right float64 sum, as a C loop adds (NumPy's pairwise sum can differ in the last bit)."""
    total = 0.0
    for value in values.tolist():
        total += value
    return total


# ------------------------------------------------------------------------------------------------
# The registry
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    env_id: str
    obs_dim: int
    act_dim: int
    horizon: int
    task_key: str  # what varies between tasks
    next_obs_in_context: bool  # reference: (s, a, r, s') context for the rand-params families


FAMILIES = {
    f.env_id: f
    for f in (
        Family("point-robot", 2, 2, 20, "goal", False),
        Family("cheetah-vel", 17, 6, 200, "velocity", False),
        Family("ant-goal", 29, 8, 200, "goal", False),
        Family("ant-dir", 27, 8, 200, "direction", False),
        Family("humanoid-dir", 348, 17, 200, "direction", False),
        Family("hopper-rand-params", 11, 3, 200, "params", True),
        Family("walker-rand-params", 17, 6, 200, "params", True),
    )
}
ENV_IDS = tuple(FAMILIES)


def get_family(env_id: str) -> Family:
    if env_id not in FAMILIES:
        raise EnvIdError(f"unknown env id {env_id!r}: choose one of {', '.join(ENV_IDS)}")
    return FAMILIES[env_id]


def _angles(stop: float, num: int, drop_last: bool) -> np.ndarray:
    return np.linspace(0.0, stop, num + int(drop_last))[: num if drop_last else None]


@cache
def _task_list(env_id: str) -> tuple:
    get_family(env_id)
    if env_id == "point-robot":
        angles = np.linspace(0.0, np.pi, NUM_TASKS)
        return tuple({"goal": [math.cos(t), math.sin(t)]} for t in angles)
    if env_id == "cheetah-vel":
        return tuple({"velocity": float(v)} for v in np.linspace(1.0, 3.0, NUM_TASKS))
    if env_id == "ant-goal":
        angles = _angles(2 * np.pi, NUM_TASKS, drop_last=True)
        return tuple({"goal": [2 * math.cos(t), 2 * math.sin(t)]} for t in angles)
    if env_id in ("ant-dir", "humanoid-dir"):
        return tuple({"direction": float(t)} for t in _angles(2 * np.pi, NUM_TASKS, drop_last=True))
    # Random physics (rand_param_envs): per-element factors base ** U(-3, 3) on the default model values.
    defaults = _default_model_params(env_id)
    rng = np.random.default_rng(RAND_PARAMS_SEED)
    tasks = []
    for _ in range(NUM_TASKS):
        task = {}
        for field, base in RAND_PARAMS_FIELDS.items():
            task[field] = defaults[field] * base ** rng.uniform(-3.0, 3.0, size=defaults[field].shape)
        tasks.append(task)
    return tuple(tasks)


def task_list(env_id: str) -> tuple:
    """The family's fixed 40 tasks, a pure function of its name (cached; treat as read-only)."""
    return _task_list(env_id)


@cache
def _default_model_params(env_id: str) -> dict:
    from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
    from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

    env = HopperEnv() if env_id == "hopper-rand-params" else Walker2dEnv(xml_file="walker2d.xml")
    params = {field: getattr(env.unwrapped.model, field).copy() for field in RAND_PARAMS_FIELDS}
    env.close()
    return params


class NormalizedAction(gym.ActionWrapper):
    """The reference's NormalizedBoxEnv: clip the policy's action to [-1, 1], map it affinely to the env's bounds."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._low, self._high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, env.action_space.shape, np.float32)

    def action(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return self._low + (action + 1.0) * 0.5 * (self._high - self._low)


def task_env(env_id: str, task_index: int = 0) -> gym.Env:
    """The family's env set to one task, actions in [-1, 1] mapped to its bounds; no time limit (make_env and
    gymnasium.make add it at the horizon)."""
    get_family(env_id)
    env = PointRobotEnv() if env_id == "point-robot" else _mujoco_classes()[env_id]()
    env.set_task(task_index)
    if np.any(env.action_space.low != -1.0) or np.any(env.action_space.high != 1.0):
        env = NormalizedAction(env)
    return env


def make_env(env_id: str, task_index: int = 0) -> gym.Env:
    """The family's env set to one task: TimeLimit at the horizon, actions in [-1, 1] mapped to its bounds."""
    return gym.wrappers.TimeLimit(task_env(env_id, task_index), max_episode_steps=get_family(env_id).horizon)


def gym_id(env_id: str) -> str:
    """The family's gymnasium id: gymnasium.make(gym_id("cheetah-vel"), task_index=6) is make_env("cheetah-vel", 6)
    inside gymnasium's own wrappers (the same observations for the same seed and actions)."""
    return f"omrl/{get_family(env_id).env_id}-v0"


def register_gym_ids() -> None:
    """Register every family with gymnasium (run on import; a second import or a reload finds them there). The entry
    point is a string, so that an env spec serialises to JSON (Minari stores one with each dataset)."""
    for env_id, family in FAMILIES.items():
        if gym_id(env_id) not in gym.registry:
            gym.register(
                gym_id(env_id),
                entry_point="omrl_envs:task_env",
                max_episode_steps=family.horizon,
                kwargs={"env_id": env_id},
            )


register_gym_ids()


def task_description(env_id: str, task_index: int) -> dict:
    """JSON-ready description of one task (for manifests and logs)."""
    task = task_list(env_id)[task_index]
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in task.items()}


def oracle_point_robot_return(task_index: int) -> float:
    """Return of the greedy per-axis-clipped walk to the known goal (optimal for Point-Robot)."""
    goal = np.asarray(task_list("point-robot")[task_index]["goal"])
    state, total = np.zeros(2), 0.0
    for _ in range(FAMILIES["point-robot"].horizon):
        state = state + np.clip(goal - state, -0.1, 0.1)
        total -= float(np.linalg.norm(state - goal))
    return total


# ------------------------------------------------------------------------------------------------
# Dataset format: <data_dir>/<env_id>/task_XX.npz (one per task) + manifest.json
# ------------------------------------------------------------------------------------------------
FLOAT_KEYS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")
ID_KEYS = ("checkpoint", "episode")
MANIFEST = "manifest.json"
PROBE_KEY = "probe_tasks"  # in a probe's manifest only (collect_sac.py --tasks): the few tasks it holds


def task_file(dataset_dir: Path, task_index: int) -> Path:
    return Path(dataset_dir) / f"task_{task_index:02d}.npz"


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def validate_task_data(env_id: str, data: dict, where: str = "task data") -> None:
    """Raise DatasetError if `data` is not one task's transitions in the dataset format."""
    family = get_family(env_id)
    for key in FLOAT_KEYS + ID_KEYS:
        if key not in data:
            raise DatasetError(f"{where}: missing array {key!r}")
    n = len(data["rewards"])
    expected = {
        "observations": (n, family.obs_dim),
        "next_observations": (n, family.obs_dim),
        "actions": (n, family.act_dim),
        "rewards": (n,),
        "terminations": (n,),
        "truncations": (n,),
        "checkpoint": (n,),
        "episode": (n,),
    }
    if n == 0:
        raise DatasetError(f"{where}: no transitions")
    for key, shape in expected.items():
        array = data[key]
        if array.shape != shape:
            raise DatasetError(f"{where}: {key} has shape {array.shape}, expected {shape}")
        if key in FLOAT_KEYS and array.dtype != np.float32:
            raise DatasetError(f"{where}: {key} has dtype {array.dtype}, expected float32")
        if key in ID_KEYS and array.dtype != np.int64:
            raise DatasetError(f"{where}: {key} has dtype {array.dtype}, expected int64")
        if key in FLOAT_KEYS and not np.isfinite(array).all():
            raise DatasetError(f"{where}: {key} contains NaN or Inf")
    if np.abs(data["actions"]).max() > 1.0:
        raise DatasetError(f"{where}: actions outside [-1, 1] (max |a| = {np.abs(data['actions']).max():.3g})")
    for key in ("terminations", "truncations"):
        if not np.isin(data[key], (0.0, 1.0)).all():
            raise DatasetError(f"{where}: {key} must hold only 0 and 1")


def write_task_data(dataset_dir: Path, env_id: str, task_index: int, data: dict) -> Path:
    """Validate and write one task's transitions atomically (a crash never leaves a half-written file)."""
    path = task_file(dataset_dir, task_index)
    data = {k: np.asarray(data[k]) for k in FLOAT_KEYS + ID_KEYS if k in data}
    validate_task_data(env_id, data, str(path))
    _atomic_write(path, lambda f: np.savez(f, **data))
    return path


def make_manifest(env_id: str, **extra) -> dict:
    return {
        "env_id": env_id,
        "num_tasks": NUM_TASKS,
        "train_tasks": list(TRAIN_TASKS),
        "test_tasks": list(TEST_TASKS),
        "tasks": [task_description(env_id, i) for i in range(NUM_TASKS)],
        **extra,
    }


def write_manifest(dataset_dir: Path, manifest: dict) -> Path:
    path = Path(dataset_dir) / MANIFEST
    atomic_write_json(path, manifest)
    return path


def read_manifest(dataset_dir: Path, env_id: str, allow_probe: bool = False) -> dict:
    """Read and validate a dataset's manifest. A probe (collect_sac.py --tasks: a few tasks, for comparing collection
    settings) is refused unless allow_probe: the training scripts, which read their data through here, need all 40
    tasks, and would otherwise fail later on a missing task file with a misleading "rebuild" hint."""
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        raise DatasetError(
            f"{path}: no dataset manifest; build the dataset with: python collect_sac.py --env-id {env_id}"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: corrupt manifest ({e.__class__.__name__}: {e})") from None
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: corrupt manifest (not a JSON object)")
    if manifest.get("env_id") != env_id:
        raise DatasetError(f"{path}: manifest is for env {manifest.get('env_id')!r}, not {env_id!r}")
    probe = manifest.get(PROBE_KEY)
    if probe is not None:
        indices = isinstance(probe, list) and all(type(t) is int and 0 <= t < NUM_TASKS for t in probe)
        if not indices or not probe or len(set(probe)) != len(probe):
            raise DatasetError(f"{path}: {PROBE_KEY} must list distinct task indices in [0, {NUM_TASKS})")
        if not allow_probe:
            raise DatasetError(
                f"{dataset_dir} is a probe of tasks {probe} (collect_sac.py --tasks), not a dataset of all "
                f"{NUM_TASKS} tasks: build one without --tasks"
            )
    if manifest.get("train_tasks") != list(TRAIN_TASKS) or manifest.get("test_tasks") != list(TEST_TASKS):
        raise DatasetError(f"{path}: train/test split differs from the registry's")
    tasks = manifest.get("tasks")
    if not isinstance(tasks, list) or len(tasks) != NUM_TASKS:
        raise DatasetError(f"{path}: manifest must list {NUM_TASKS} tasks")
    for i, task in enumerate(tasks):
        expected = task_description(env_id, i)
        if set(task) != set(expected) or not all(np.allclose(task[k], expected[k]) for k in expected):
            raise DatasetError(f"{path}: task {i} differs from the registry's task list")
    return manifest


def read_task_data(dataset_dir: Path, env_id: str, task_index: int) -> dict:
    path = task_file(dataset_dir, task_index)
    if not path.is_file():
        raise DatasetError(f"{path}: missing task file; rebuild with: python collect_sac.py --env-id {env_id}")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except Exception as e:  # zip/npy parse errors come in many types
        raise DatasetError(f"{path}: corrupt file ({e.__class__.__name__}: {e})") from None
    validate_task_data(env_id, data, str(path))
    return data


def read_task_length(dataset_dir: Path, env_id: str, task_index: int) -> int:
    """Transitions in one task file, read from its rewards alone (a loader sizes its buffer before reading the tasks;
    read_task_data validates everything later)."""
    path = task_file(dataset_dir, task_index)
    if not path.is_file():
        raise DatasetError(f"{path}: missing task file; rebuild with: python collect_sac.py --env-id {env_id}")
    try:
        with np.load(path, allow_pickle=False) as f:
            rewards = f["rewards"] if "rewards" in f.files else None
    except Exception as e:  # zip/npy parse errors come in many types
        raise DatasetError(f"{path}: corrupt file ({e.__class__.__name__}: {e})") from None
    if rewards is None or rewards.ndim != 1:
        raise DatasetError(f"{path}: missing array 'rewards'" if rewards is None else f"{path}: rewards is not 1-D")
    return len(rewards)


def load_dataset(dataset_dir: Path, env_id: str, task_indices=range(NUM_TASKS)) -> tuple[dict, dict]:
    """Read and validate a dataset: (manifest, {task index: arrays})."""
    manifest = read_manifest(dataset_dir, env_id)
    return manifest, {i: read_task_data(dataset_dir, env_id, i) for i in task_indices}


class DatasetHasher:
    """A dataset's fingerprint built task by task, so that a loader never holds every task's arrays at once: update()
    with each task's arrays in task order, then fingerprint(manifest). The same value as dataset_fingerprint."""

    def __init__(self):
        self.digest = hashlib.sha256()
        self.transitions_per_task = []

    def update(self, task: dict) -> None:
        for key in FLOAT_KEYS + ID_KEYS:
            self.digest.update(np.ascontiguousarray(task[key]).data)  # the array's bytes, without a copy
        self.transitions_per_task.append(int(len(task["rewards"])))

    def fingerprint(self, manifest: dict) -> dict:
        """What identifies a dataset: its collection settings, seed, code version, transitions per task, and a
        SHA-256 of the task arrays' contents (not of the .npz files, whose zip headers carry timestamps): a rebuild
        with the same command gives the same hash. Also the data's quality, for the tables drawn from result files:
        the mean test-task return of the saved episodes at each kept checkpoint (None without a collection log)."""
        code = manifest.get("code_version") or {}
        returns = (manifest.get("checkpoint_returns_mean") or {}).get("test_tasks")
        quality = None if returns is None else {"steps": manifest.get("checkpoints"), "test_tasks": returns}
        return {
            "env_id": manifest.get("env_id"),
            "seed": manifest.get("seed"),
            "settings": manifest.get("settings"),
            "code_version": code.get("git_commit") if isinstance(code, dict) else code,
            "transitions_per_task": list(self.transitions_per_task),
            "content_hash": self.digest.hexdigest(),
            "checkpoint_returns": quality,
        }


def dataset_fingerprint(manifest: dict, tasks: dict) -> dict:
    """DatasetHasher's fingerprint of a loaded dataset ({task index: arrays}, hashed in task order)."""
    hasher = DatasetHasher()
    for t in sorted(tasks):
        hasher.update(tasks[t])
    return hasher.fingerprint(manifest)


def describe_fingerprint(fingerprint: dict) -> str:
    """A fingerprint in one short phrase, for error messages."""
    counts = fingerprint.get("transitions_per_task") or [0]
    return (
        f"{fingerprint.get('env_id')} seed {fingerprint.get('seed')}, {min(counts)}-{max(counts)} transitions per "
        f"task, content {str(fingerprint.get('content_hash'))[:12]}"
    )


def code_version(*paths) -> dict:
    """The code a run ran: git commit of the checkout, whether these files differ from it, and their SHA-256."""
    paths = [Path(p).resolve() for p in paths]
    here = Path(__file__).resolve().parent
    try:
        git = ["git", "-C", str(here)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        status = [*git, "status", "--porcelain", "--", *map(str, paths)]
        dirty = bool(subprocess.run(status, capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return {
        "git_commit": commit or None,
        "git_dirty": dirty,
        "files": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths},
    }
