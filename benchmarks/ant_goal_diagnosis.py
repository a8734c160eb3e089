"""Where do ant-goal policies go wrong? The same episode statistics for the dataset's kept checkpoints and for a
trained policy, so that a policy can be placed against the data it learnt from.

    python benchmarks/ant_goal_diagnosis.py data                                    # data/ant-goal/
    python benchmarks/ant_goal_diagnosis.py policy select.py runs/x/checkpoint.pt   # any of the six scripts

Per episode (ant-goal observations are [x, y, z, qw, qx, qy, qz, 8 joint angles, 14 velocities]; the reward is
-|xy - goal|_1 - 0.1 |a|^2 + the contact term):
  return      the episode's return;
  ctrl        its control cost, 0.1 |a|^2 summed over the episode;
  distance    the torso's xy distance (L2) to the goal at the episode's end (the goals are 2.0 from the start);
  moved       the torso's xy displacement from the episode's start to its end;
  heading     the cosine between the torso's xy displacement over the episode and the direction from its start to the
              goal (1: straight at the goal; about 0 on average for a policy that walks the same way for every goal);
  flipped     the share of steps whose torso is upside down (its up axis points below the horizon);
  saturated   the share of action components at the bounds (|a| >= 0.99).
`data` prints them per kept checkpoint (mean over the saved episodes; the median distance), for all tasks and for
the test tasks. `policy` re-evaluates a checkpoint with the script's own meta-test (one protocol, default
`offline`), records the final scored episode of every test run and prints the same statistics; for `select.py`
it also compares the critic's value of the policy's actions with that of the data actions on the test tasks' data
(with each task's offline z), and with the policy's realised discounted return from its start states.
"""

import argparse
import json
import runpy
import sys
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # appended: the standard library's `select` stays first
import omrl_envs  # noqa: E402

ENV_ID = "ant-goal"
SATURATED = 0.99
PROTOCOLS = ("offline", "online-prior", "online-random", "online-proximal")  # the scripts' meta-test


def upside_down(obs: np.ndarray) -> np.ndarray:
    """Whether the torso's up axis points below the horizon: the z component of the body z axis of the torso
    quaternion (w, x, y, z) at obs[3:7] is 1 - 2 (x^2 + y^2)."""
    return 1.0 - 2.0 * (obs[..., 4] ** 2 + obs[..., 5] ** 2) < 0.0


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    """cos of the angle between u and v (0 for a zero vector)."""
    norms = np.linalg.norm(u) * np.linalg.norm(v)
    return float(u @ v / norms) if norms > 0 else 0.0


def episode_statistics(obs, actions, rewards, last_next_obs, goal) -> dict:
    """The statistics of one episode from its observations (T, 29), actions (T, 8), rewards (T,) and final
    observation."""
    return {
        "return": float(rewards.sum()),
        "ctrl": float(0.1 * np.square(actions).sum()),
        "distance": float(np.linalg.norm(last_next_obs[:2] - np.asarray(goal))),
        "moved": float(np.linalg.norm(last_next_obs[:2] - obs[0, :2])),
        "heading": cosine(last_next_obs[:2] - obs[0, :2], np.asarray(goal) - obs[0, :2]),
        "flipped": float(upside_down(np.vstack([obs, last_next_obs[None]])).mean()),
        "saturated": float((np.abs(actions) >= SATURATED).mean()),
    }


def summary(episodes: list[dict]) -> dict:
    """Mean of each statistic over the episodes, the median of the final distance."""
    out = {
        k: float(np.mean([e[k] for e in episodes]))
        for k in ("return", "ctrl", "moved", "heading", "flipped", "saturated")
    }
    out["distance"] = float(np.median([e["distance"] for e in episodes]))
    return out


HEADER = "| return | ctrl cost | median final distance | moved | heading | steps upside down | actions at a bound |"


def row(s: dict) -> str:
    cells = (f"{s['return']:.1f}", f"{s['ctrl']:.1f}", f"{s['distance']:.2f}", f"{s['moved']:.2f}",
             f"{s['heading']:+.2f}", f"{s['flipped']:.1%}", f"{s['saturated']:.1%}")  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def data_table(data_dir: Path) -> str:
    """Per kept checkpoint of the dataset: the statistics over all tasks and over the test tasks. A probe
    (collect_sac.py --tasks) is read too: over its tasks and the test tasks among them."""
    dataset_dir = data_dir / ENV_ID
    try:
        manifest = omrl_envs.read_manifest(dataset_dir, ENV_ID, allow_probe=True)
    except omrl_envs.DatasetError as error:
        raise SystemExit(f"error: {error}") from None
    if not manifest.get("complete"):
        raise SystemExit(f"error: {dataset_dir} is not complete: run python collect_sac.py --env-id {ENV_ID}")
    probe = manifest.get(omrl_envs.PROBE_KEY)
    task_ids = list(range(omrl_envs.NUM_TASKS)) if probe is None else probe
    test_ids = [task for task in task_ids if task in omrl_envs.TEST_TASKS]
    tasks = omrl_envs.task_list(ENV_ID)
    per_checkpoint = {}  # checkpoint -> (episodes of all tasks, episodes of test tasks)
    for task in task_ids:
        data = omrl_envs.read_task_data(dataset_dir, ENV_ID, task)
        ends = np.flatnonzero((data["terminations"] + data["truncations"]) > 0)
        starts = np.concatenate([[0], ends[:-1] + 1])
        for start, end in zip(starts, ends, strict=True):
            stats = episode_statistics(
                data["observations"][start : end + 1], data["actions"][start : end + 1],
                data["rewards"][start : end + 1], data["next_observations"][end], tasks[task]["goal"],
            )  # fmt: skip
            everyone, test = per_checkpoint.setdefault(int(data["checkpoint"][start]), ([], []))
            everyone.append(stats)
            if task in test_ids:
                test.append(stats)
    title = f"{ENV_ID} dataset {dataset_dir}"
    if probe is not None:
        title += f", a probe of tasks {probe} (test tasks among them: {test_ids})"
    lines = [f"{title} (per kept checkpoint: all tasks / test tasks)", "",
             "| checkpoint | tasks " + HEADER, "|---" * 9 + "|"]  # fmt: skip
    for checkpoint in sorted(per_checkpoint):
        for name, episodes in zip(("all", "test"), per_checkpoint[checkpoint], strict=True):
            if not episodes:  # a probe without a test task
                continue
            lines.append(f"| {checkpoint:,} | {name} ({len(episodes)} episodes) " + row(summary(episodes)))
    return "\n".join(lines)


class Recorder(gym.Wrapper):
    """Keeps the statistics of every episode the env plays (the meta-test's envs, made through omrl_envs)."""

    def __init__(self, env, task: int, log: list):
        super().__init__(env)
        self.task, self.log, self.steps = task, log, None
        self.goal = omrl_envs.task_list(ENV_ID)[task]["goal"]

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.steps = {"obs": [obs], "actions": [], "rewards": []}
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps["obs"].append(obs)
        self.steps["actions"].append(np.asarray(action, dtype=np.float64))
        self.steps["rewards"].append(reward)
        if terminated or truncated:
            o, a, r = np.array(self.steps["obs"]), np.array(self.steps["actions"]), np.array(self.steps["rewards"])
            stats = episode_statistics(o[:-1], a, r, o[-1], self.goal)
            self.log.append({"env": id(self), "task": self.task, "start": o[0], "rewards": r, **stats})
        return obs, reward, terminated, truncated, info


def reevaluate(script: Path, checkpoint: Path, protocol: str, data_dir: str) -> tuple[dict, list]:
    """The script's own --eval-checkpoint for one protocol, in this process with recording envs: (the result record,
    the final scored episode of every run)."""
    log, make_env = [], omrl_envs.make_env
    omrl_envs.make_env = lambda env_id, task=0: Recorder(make_env(env_id, task), task, log)
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "reeval.json"
        argv = [str(script), "--eval-checkpoint", str(checkpoint), "--protocols", protocol, "--eval-output",
                str(output), "--data-dir", data_dir]  # fmt: skip
        saved_argv, sys.argv = sys.argv, argv
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as stop:
            if stop.code not in (0, None):
                raise
        finally:
            sys.argv, omrl_envs.make_env = saved_argv, make_env
        record = json.loads(output.read_text())
    last = {}
    for episode in log:  # the last episode of each env is its final scored episode (offline: every one is scored)
        last[episode["env"]] = episode
    return record, list(last.values())


def select_values(checkpoint: Path, finals: list, data_dir: str) -> list[str]:
    """select.py only: the critic's Q1 of the policy's actions vs the data actions on the test tasks' data, and at
    the final episodes' start states vs the realised discounted return of the policy from there."""
    import torch

    module = runpy.run_path(str(ROOT / "select.py"), run_name="select_diagnosis")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    args = module["resolve_args"](module["Args"](**saved["args"]))
    data = module["load_offline_data"](ENV_ID, data_dir, args.normalize_states, torch.device("cpu"),
                                       (saved["obs_mean"], saved["obs_std"]))  # fmt: skip
    encoder = module["ContextEncoder"](data.context_dim, args.encoder_hidden, args.latent_dim)
    actor = module["Actor"](data.obs_dim, args.latent_dim, args.rl_hidden, data.act_dim)
    critic = module["TwinCritic"](data.obs_dim + data.act_dim + args.latent_dim, args.rl_hidden)
    for name, net in (("context_encoder", encoder), ("actor", actor), ("critic", critic)):
        net.load_state_dict(saved["networks"][name])
    lines, gaps, predicted, realised = [], [], [], []
    with torch.inference_mode():
        for task in omrl_envs.TEST_TASKS:
            rows = data.rows[int(data.offsets[task]) : int(data.offsets[task] + data.counts[task])]
            z = encoder(rows[:, : data.context_dim]).mean(0, keepdim=True)  # the task's whole data as context
            obs, act = rows[:, : data.obs_dim], rows[:, data.obs_dim : data.obs_dim + data.act_dim]
            zz = z.expand(len(rows), -1)
            q_data = critic(obs, act, zz, members=slice(0, 1))[0]
            q_policy = critic(obs, actor(obs, zz), zz, members=slice(0, 1))[0]
            gaps.append(float((q_policy - q_data).mean()))
            for episode in (e for e in finals if e["task"] == task):
                s0 = torch.as_tensor(((episode["start"] - data.obs_mean) / data.obs_std)[None], dtype=torch.float32)
                predicted.append(float(critic(s0, actor(s0, z), z, members=slice(0, 1))[0, 0]))
                realised.append(float((args.gamma ** np.arange(len(episode["rewards"])) * episode["rewards"]).sum()))
    lines.append(f"Q1(s, pi(s, z)) - Q1(s, a_data) on the test tasks' data: mean {np.mean(gaps):+.1f} "
                 f"(per task {', '.join(f'{g:+.1f}' for g in gaps)})")  # fmt: skip
    tail = args.gamma ** len(finals[0]["rewards"])
    lines.append(f"Q1(s0, pi(s0, z)) at the final episodes' start states: mean {np.mean(predicted):.1f}; the policy's "
                 f"discounted return over its {len(finals[0]['rewards'])} steps: {np.mean(realised):.1f} (the steps "
                 f"after the horizon, weight gamma^T = {tail:.2f}, are missing from it)")  # fmt: skip
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="the dataset is <data-dir>/ant-goal/")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("data", help="statistics of the dataset's kept checkpoints")
    policy = sub.add_parser("policy", help="statistics of a checkpoint's final scored episodes")
    policy.add_argument("script", type=Path, help="the script that trained the checkpoint, e.g. select.py")
    policy.add_argument("checkpoint", type=Path)
    policy.add_argument("--protocol", default="offline", choices=PROTOCOLS)
    args = parser.parse_args()
    if args.command == "data":
        print(data_table(Path(args.data_dir)))
        return 0
    for path in (args.script, args.checkpoint):
        if not path.is_file():
            raise SystemExit(f"error: {path} is not a file")
    record, finals = reevaluate(args.script, args.checkpoint, args.protocol, args.data_dir)
    if record["args"]["env_id"] != ENV_ID:
        raise SystemExit(f"error: {args.checkpoint} is a {record['args']['env_id']} run, not {ENV_ID}")
    result = record["protocols"][args.protocol]
    print(
        f"{args.checkpoint} ({args.script.name}, step {record['step']}), {args.protocol}: return "
        f"{result['return']:.1f}, context shift {result['context_shift']:.2f}; its final scored episodes:"
    )
    print("\n| episodes " + HEADER + "\n" + "|---" * 8 + "|")
    print(f"| {len(finals)} " + row(summary(finals)))
    if args.script.name == "select.py":
        print("\n" + "\n".join(select_values(args.checkpoint, finals, args.data_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
