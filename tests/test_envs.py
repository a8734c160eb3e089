"""The env registry: shapes, task lists, rewards on hand-computed transitions, task switching, seeding."""

import json
import math

import gymnasium
import numpy as np
import pytest
from conftest import run_script

import omrl_envs
from omrl_envs import ENV_IDS, FAMILIES, TEST_TASKS, TRAIN_TASKS, make_env, task_list

MUJOCO_IDS = [e for e in ENV_IDS if e != "point-robot"]


def rollout(env, actions, seed):
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, r, terminated, truncated, _ = env.step(a)
        observations.append(obs)
        rewards.append(r)
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards)


def fixed_actions(env_id, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(n, FAMILIES[env_id].act_dim)).astype(np.float32)


def test_split():
    assert TEST_TASKS == (2, 6, 10, 14, 18, 22, 26, 30, 34, 38)
    assert len(TRAIN_TASKS) == 30 and set(TRAIN_TASKS) | set(TEST_TASKS) == set(range(40))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_shapes_and_horizon(env_id):
    family = FAMILIES[env_id]
    env = make_env(env_id, 3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (family.obs_dim,) == env.observation_space.shape
    assert env.action_space.shape == (family.act_dim,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    assert env.spec is None or env.spec.max_episode_steps in (None, family.horizon)
    assert env._max_episode_steps == family.horizon
    assert env.unwrapped.task_index == 3


def test_unknown_env_id_is_one_line():
    with pytest.raises(omrl_envs.EnvIdError) as err:
        make_env("cheetah-dir")
    assert "\n" not in str(err.value) and "point-robot" in str(err.value)


def test_task_lists():
    goals = np.array([t["goal"] for t in task_list("point-robot")])
    angles = np.linspace(0, np.pi, 40)
    np.testing.assert_allclose(goals, np.stack([np.cos(angles), np.sin(angles)], 1))
    velocities = [t["velocity"] for t in task_list("cheetah-vel")]
    np.testing.assert_allclose(velocities, np.linspace(1.0, 3.0, 40))
    directions = np.linspace(0, 2 * np.pi, 41)[:-1]
    for env_id in ("ant-dir", "humanoid-dir"):
        np.testing.assert_allclose([t["direction"] for t in task_list(env_id)], directions)
    ant_goals = np.array([t["goal"] for t in task_list("ant-goal")])
    np.testing.assert_allclose(ant_goals, 2 * np.stack([np.cos(directions), np.sin(directions)], 1))
    # Test tasks of point-robot sit at ~9.2, 27.7, ..., 175.4 degrees.
    np.testing.assert_allclose(np.degrees(angles[list(TEST_TASKS)])[[0, 1, -1]], [9.23, 27.69, 175.38], atol=0.01)


@pytest.mark.parametrize("env_id", ["hopper-rand-params", "walker-rand-params"])
def test_rand_params_task_list(env_id):
    tasks = task_list(env_id)
    env = make_env(env_id)
    defaults = env.unwrapped.default_params
    rng = np.random.default_rng(1234)  # the family's fixed generator: same draws, same order
    for task in tasks:
        for field, base in omrl_envs.RAND_PARAMS_FIELDS.items():
            factor = base ** rng.uniform(-3, 3, size=defaults[field].shape)
            np.testing.assert_array_equal(task[field], defaults[field] * factor)
    # Zero entries (world body mass, free-joint damping) stay zero; factors are within base**[-3, 3].
    masses = np.array([t["body_mass"] for t in tasks])
    assert np.all(masses[:, 0] == 0)
    ratio = masses[:, 1:] / defaults["body_mass"][1:]
    assert ratio.min() >= 1.5**-3 and ratio.max() <= 1.5**3 and ratio.std() > 0.3


def test_point_robot_reward_hand_computed():
    env = make_env("point-robot", 5)
    env.reset(seed=0)
    obs, reward, terminated, truncated, _ = env.step(np.array([1.0, 0.5], dtype=np.float32))
    goal = np.array([math.cos(5 * math.pi / 39), math.sin(5 * math.pi / 39)])
    np.testing.assert_allclose(obs, [0.1, 0.05])
    assert reward == pytest.approx(-np.linalg.norm(np.array([0.1, 0.05]) - goal), abs=1e-12)
    assert not terminated and not truncated
    obs, *_ = env.step(np.array([3.0, -7.0], dtype=np.float32))  # clipped to the bounds, as NormalizedBoxEnv
    np.testing.assert_allclose(obs, [0.2, -0.05])


def _mujoco_transition(env_id, task_index=7):
    """Take one step, and return what the reward must be, computed from the simulator state by hand."""
    env = make_env(env_id, task_index)
    env.reset(seed=1)
    u = env.unwrapped
    model, data = u.model, u.data
    action = fixed_actions(env_id, 1, seed=2)[0]
    before = {
        "qpos": data.qpos.copy(),
        "torso": data.body("torso").xpos.copy(),
        "com": (model.body_mass[:, None] * data.xipos).sum(0) / model.body_mass.sum(),
    }
    obs, reward, terminated, _, _ = env.step(action)
    task = u.task
    dt = u.dt
    if env_id == "cheetah-vel":
        velocity = (data.qpos[0] - before["qpos"][0]) / dt
        expected = -abs(velocity - task["velocity"]) - 0.05 * np.sum(action**2)
    elif env_id == "ant-goal":
        contact = 5e-4 * np.sum(np.clip(data.cfrc_ext, -1, 1) ** 2)
        expected = -np.abs(data.qpos[:2] - task["goal"]).sum() - 0.1 * np.sum(action**2) - contact
    elif env_id == "ant-dir":
        velocity = (data.body("torso").xpos[:2] - before["torso"][:2]) / dt
        direction = np.array([math.cos(task["direction"]), math.sin(task["direction"])])
        contact = 5e-4 * np.sum(np.clip(data.cfrc_ext, -1, 1) ** 2)
        expected = velocity @ direction - 0.5 * np.sum(action**2) - contact + 1.0 * (not terminated)
    elif env_id == "humanoid-dir":
        com = (model.body_mass[:, None] * data.xipos).sum(0) / model.body_mass.sum()
        velocity = (com[:2] - before["com"][:2]) / dt
        direction = np.array([math.cos(task["direction"]), math.sin(task["direction"])])
        ctrl = 0.4 * np.clip(action, -1, 1)  # env bounds +-0.4
        contact = min(5e-7 * np.sum(data.cfrc_ext**2), 10.0)
        expected = 1.25 * velocity @ direction - 0.1 * np.sum(ctrl**2) - contact + 5.0 * (not terminated)
    else:  # hopper / walker rand-params: v5's reward
        velocity = (data.qpos[0] - before["qpos"][0]) / dt
        expected = velocity + 1.0 * (not terminated) - 1e-3 * np.sum(action**2)
    return reward, expected, u


@pytest.mark.parametrize("env_id", MUJOCO_IDS)
def test_mujoco_reward_hand_computed(env_id):
    reward, expected, u = _mujoco_transition(env_id)
    assert reward == pytest.approx(expected, rel=1e-9, abs=1e-9)
    if env_id.endswith("rand-params"):
        assert u.model.opt.timestep == 0.004 and u.dt == pytest.approx(0.016)


def test_walker_uses_reference_feet_friction():
    defaults = make_env("walker-rand-params").unwrapped.default_params["geom_friction"]
    assert sorted(defaults[-2:, 0].tolist()) == [0.9, 1.9]


# cheetah-vel's body masses in the family's first version, when the model came from half_cheetah.xml's settotalmass="14"
CHEETAH_BODY_MASSES = [
    0.0, 6.25020920502092, 1.5435146443514645, 1.5874476987447697, 1.0953974895397491, 1.4380753138075317,
    1.200836820083682, 0.8845188284518829,
]  # fmt: skip


def model_differences(ours, theirs, prefix="", depth=0) -> list:
    """Names of the fields of two MjModels (arrays, numbers, names, and the fields of opt, stat, vis and vis's parts)
    that differ in any bit."""
    different = []
    for name in [n for n in dir(ours) if not n.startswith("_")]:
        value, other = getattr(ours, name), getattr(theirs, name)
        if isinstance(value, np.ndarray):
            same = value.shape == other.shape and value.tobytes() == other.tobytes()
        elif isinstance(value, (int, float, str, bytes)):
            same = value == other
        elif type(value).__module__ == "mujoco._structs" and not callable(value) and depth < 2:
            different += model_differences(value, other, f"{prefix}{name}.", depth + 1)
            continue
        else:
            continue
        if not same:
            different.append(prefix + name)
    return different


def test_cheetah_builds_without_the_settotalmass_warning():
    """mujoco 4.0 prints a deprecation warning for half_cheetah.xml's settotalmass at every build; ours compiles the
    model without it and scales it as that option did: no warning, the recorded masses (total 14), and in every bit
    the model and the trajectories of gymnasium's HalfCheetah-v5 built from the XML."""
    masses = "json.dumps(omrl_envs.make_env('cheetah-vel').unwrapped.model.body_mass.tolist())"
    proc = run_script("-c", f"import json, omrl_envs; print({masses})", timeout=120)
    assert "settotalmass" not in proc.stdout + proc.stderr and "WARNING" not in proc.stdout + proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == CHEETAH_BODY_MASSES
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

    ours, theirs = make_env("cheetah-vel", 5), HalfCheetahEnv(ctrl_cost_weight=0.05)  # theirs: the XML (it warns)
    assert ours.unwrapped.model.body_mass.sum() == pytest.approx(14.0, abs=1e-12)
    assert model_differences(ours.unwrapped.model, theirs.model) == []
    obs, _ = ours.reset(seed=4)
    np.testing.assert_array_equal(obs, theirs.reset(seed=4)[0])
    for action in fixed_actions("cheetah-vel", 100):
        obs, _, _, _, info = ours.step(action)
        their_obs, _, _, _, their_info = theirs.step(action)
        np.testing.assert_array_equal(obs, their_obs)
        assert info["x_velocity"] == their_info["x_velocity"]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_switching_task_changes_and_restores(env_id):
    env = make_env(env_id, 0)
    actions = fixed_actions(env_id, 40)
    obs_a, rew_a = rollout(env, actions, seed=3)
    env.unwrapped.set_task(9)
    obs_b, rew_b = rollout(env, actions, seed=3)
    n = min(len(rew_a), len(rew_b))
    assert not np.array_equal(rew_a[:n], rew_b[:n])  # reward (and for rand-params, dynamics) changed
    if env_id.endswith("rand-params"):
        assert not np.array_equal(obs_a[: n + 1], obs_b[: n + 1])
    env.unwrapped.set_task(0)
    obs_c, rew_c = rollout(env, actions, seed=3)
    np.testing.assert_array_equal(obs_a, obs_c)
    np.testing.assert_array_equal(rew_a, rew_c)


@pytest.mark.parametrize("env_id", ["hopper-rand-params", "walker-rand-params"])
def test_rand_params_are_set_never_compounded(env_id):
    env = make_env(env_id, 4)
    model = env.unwrapped.model
    for index in (4, 11, 11, 4, 30):
        env.unwrapped.set_task(index)
        for field in omrl_envs.RAND_PARAMS_FIELDS:
            np.testing.assert_array_equal(getattr(model, field), task_list(env_id)[index][field])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_trajectory(env_id):
    actions = fixed_actions(env_id, 30)
    first = rollout(make_env(env_id, 6), actions, seed=11)
    second = rollout(make_env(env_id, 6), actions, seed=11)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    if env_id != "point-robot":  # point-robot always starts at the origin
        other = rollout(make_env(env_id, 6), actions, seed=12)
        assert not np.array_equal(first[0][0], other[0][0])


def test_global_numpy_rng_untouched():
    omrl_envs._task_list.cache_clear()
    omrl_envs._default_model_params.cache_clear()
    np.random.seed(123)
    state = np.random.get_state()
    for env_id in ENV_IDS:
        env = make_env(env_id, 2)
        rollout(env, fixed_actions(env_id, 5), seed=0)
        env.unwrapped.set_task(17)
        env.reset()
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


def test_point_robot_oracle_ceiling():
    returns = [omrl_envs.oracle_point_robot_return(i) for i in TEST_TASKS]
    assert np.mean(returns) == pytest.approx(-3.855, abs=0.005)
    assert -4.50 <= min(returns) and max(returns) <= -3.05
    # The same greedy walk through the env itself gives the same returns.
    for i in TEST_TASKS:
        env = make_env("point-robot", i)
        obs, _ = env.reset(seed=0)
        goal, total, done = np.array(env.unwrapped.goal), 0.0, False
        while not done:
            obs, r, terminated, truncated, _ = env.step(np.clip((goal - obs) / 0.1, -1, 1))
            total, done = total + r, terminated or truncated
        assert total == pytest.approx(omrl_envs.oracle_point_robot_return(i), abs=1e-9)
    # Optimal: no other constant-speed-capped walk does better (e.g. a straight line at full speed).
    i = TEST_TASKS[3]
    goal = np.array(task_list("point-robot")[i]["goal"])
    state, straight = np.zeros(2), 0.0
    for _ in range(20):
        step = goal - state
        state = state + step * min(1.0, 0.1 / max(np.linalg.norm(step), 1e-12))
        straight -= np.linalg.norm(state - goal)
    assert omrl_envs.oracle_point_robot_return(i) >= straight - 1e-9


def test_point_robot_importable_without_mujoco():
    """Point-Robot must not need MuJoCo: block the import and build it."""
    from conftest import run_script

    code = (
        "import sys; sys.modules['mujoco'] = None\n"
        "import omrl_envs\n"
        "env = omrl_envs.make_env('point-robot', 2); env.reset(seed=0); env.step([0.0, 1.0])\n"
        "print('ok')"
    )
    assert run_script("-c", code).stdout.strip() == "ok"


def steps_until_the_end(env, actions, seed) -> list:
    """(observation, reward, terminated, truncated) of each step of one episode, the reset's observation first."""
    obs, _ = env.reset(seed=seed)
    steps = [(obs, 0.0, False, False)]
    for a in actions:
        obs, r, terminated, truncated, _ = env.step(a)
        steps.append((obs, r, terminated, truncated))
        if terminated or truncated:
            break
    return steps


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_id_is_the_same_env_as_make_env(env_id):
    """Importing omrl_envs registers omrl/<env-id>-v0: gymnasium.make(..., task_index=6) gives make_env(env_id, 6)'s
    observations, rewards and episode ends for the same seed and actions, with the time limit at the horizon."""
    family = FAMILIES[env_id]
    ours = make_env(env_id, 6)
    theirs = gymnasium.make(f"omrl/{env_id}-v0", task_index=6)
    assert omrl_envs.gym_id(env_id) == theirs.spec.id == f"omrl/{env_id}-v0"
    assert theirs.spec.max_episode_steps == family.horizon and theirs.unwrapped.task_index == 6
    assert theirs.observation_space == ours.observation_space and theirs.action_space == ours.action_space
    actions = fixed_actions(env_id, family.horizon + 5)
    expected, got = steps_until_the_end(ours, actions, seed=11), steps_until_the_end(theirs, actions, seed=11)
    assert len(got) == len(expected)
    for (obs_a, *rest_a), (obs_b, *rest_b) in zip(expected, got, strict=True):
        np.testing.assert_array_equal(obs_a, obs_b)
        assert rest_a == rest_b
    terminated, truncated = got[-1][2:]
    assert truncated if len(got) == family.horizon + 1 else terminated  # the time limit is the family's horizon


def test_gymnasium_id_without_importing_the_registry_first():
    """gymnasium.make("omrl_envs:omrl/<env-id>-v0") imports the registry itself (as Minari's recover_environment does
    from a stored env spec)."""
    code = (
        "import gymnasium\n"
        "env = gymnasium.make('omrl_envs:omrl/point-robot-v0', task_index=38)\n"
        "print(env.unwrapped.task_index, env.spec.max_episode_steps)"
    )
    assert run_script("-c", code).stdout.split() == ["38", "20"]
