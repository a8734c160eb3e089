# Offline datasets for offline meta-RL: one SAC learner per task, all 40 tasks of a family trained together in
# one process, their stochastic policies rolled out at a fixed schedule of checkpoints (benchmark.md §2).
#
# Protocol: CSRO (Gao et al., NeurIPS 2023), official code MoreanP/CSRO `policy_train.py`, which runs one SAC
# process per task (a vendored copy of denisyarats/pytorch_sac: tanh-Gaussian actor, twin critics with targets,
# learned temperature, target entropy -|A|). Here the 40 learners are one set of batched networks (a leading task
# dimension, one `baddbmm` per layer), one optimiser step updates all of them, each task keeps its own replay
# buffer, and the 40 environments are stepped together with one batched policy forward per step. Each learner sees
# only its own task's data, and since Adam is elementwise and the loss is a sum of per-task losses, every task's
# update is exactly the single-task one. Code layout follows CleanRL's `sac_continuous_action.py`.
#
#   python collect_sac.py --env-id point-robot                      # the Point-Robot dataset: about 1.5 min on CPU
#   python collect_sac.py --env-id cheetah-vel                      # the "cpu" preset: about half an hour on 2 cores
#   python collect_sac.py --env-id cheetah-vel --preset reference   # CSRO's scale, for a GPU machine
#   python collect_sac.py --env-id cheetah-vel --tasks 2 10 22 30 --data-dir data/probes   # a probe of 4 tasks
#
# Killing the process and running the same command again continues from the last completed checkpoint interval.
import copy
import dataclasses
import hashlib
import importlib.metadata
import math
import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import omrl_envs


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run name)"""
    seed: int = 0
    """seed of the collection: networks, replay sampling, exploration noise and env resets"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, use CUDA when it is available"""
    env_id: str = "point-robot"
    """the task family, one of omrl_envs.ENV_IDS"""
    data_dir: str = "data"
    """the dataset is written to <data-dir>/<env-id>/ (task_XX.npz, manifest.json, checkpoint_returns.png)"""
    runs_dir: str = "runs"
    """the collection's TensorBoard log and final learners go to <runs-dir>/<env-id>__<exp-name>__<seed>__<time>/"""

    # Collection settings: a row of PRESETS, then optional overrides (None: the preset's value)
    preset: str = "cpu"
    """"cpu" (sized for a CPU; for point-robot the reference protocol with smaller networks) or "reference" (CSRO)"""
    total_steps: int | None = None
    """SAC env steps per task (training stops at the last checkpoint before this, which is the last with data)"""
    random_steps: int | None = None
    """uniform-random warm-up env steps per task; one update per env step follows"""
    checkpoint_every: int | None = None
    """env steps between checkpoints (also the interval of the resume state)"""
    first_checkpoint: int | None = None
    """the first checkpoint whose episodes are kept (a multiple of checkpoint-every); the rest follow to total-steps"""
    episodes_per_checkpoint: int | None = None
    """episodes of the stochastic policy saved per task at each kept checkpoint"""
    hidden_dim: int | None = None
    """width of the two hidden layers of the actor and of each critic"""
    batch_size: int | None = None
    """replay minibatch size per task and update"""
    learning_rate: float | None = None
    """Adam learning rate of actor, critics and temperature"""
    buffer_size: int | None = None
    """replay capacity per task, a ring buffer: the oldest transitions are overwritten (default: the preset's; every
    step, as the reference, except humanoid-dir at the reference preset: 300,000, what a 64 GB machine holds. A
    transition is (s, a, r, s', not_done) in float32, (348 + 17 + 1 + 348 + 1) x 4 = 2,860 bytes for Humanoid: 40
    buffers of 1M steps need 114.4 GB, of 300,000 steps 34.3 GB, next to the resume state's copy of one interval
    (5.7 GB) and the learners with their Adam states (3.2 GB). The other families keep all 1M steps: 40 buffers take
    6.7 GB (cheetah-vel) to 10.9 GB (ant-goal))"""
    tasks: tuple[int, ...] | None = None
    """a probe: train and collect only these task indices (None: all 40 tasks), to compare collection settings by
    their learning curves on a few tasks, e.g. --tasks 2 10 22 30 at a tenth of a full collection's env steps. Each
    learner sees only its own task's data, so a task's curve is the same kind of measurement as in a full collection
    (with other random streams). Files and manifest use the real task ids; the training scripts refuse a probe"""
    overwrite: bool = False
    """if toggled, delete a finished dataset (or an unfinished run) in <data-dir>/<env-id>/ and start over"""


@dataclass(frozen=True)
class Preset:
    total_steps: int
    random_steps: int
    checkpoint_every: int
    first_checkpoint: int
    episodes_per_checkpoint: int
    hidden_dim: int
    batch_size: int
    learning_rate: float
    buffer_size: int | None  # None: total_steps (the reference keeps every transition); see Args.buffer_size
    rollout_envs: int  # envs per task stepped together for the checkpoint episodes (speed and memory only)


# fmt: off
# One row per (family, preset). "reference": CSRO's policy_train.py (benchmark.md §2). "cpu": chosen by measurement on
# a 2-core CPU (docs/families-and-datasets.md); the MuJoCo cpu row was measured on cheetah-vel. Point-Robot's
# cpu row is the reference protocol with 2x64 networks and batch 128: its returns match the reference learner's (2x1024,
# batch 1024, lr 1e-4, run here on task 18: -17.3 at the first kept checkpoint, -6.2 at the last; this row -19.6, -6.3).
# Columns, as Preset's fields: steps per task, warm-up, checkpoint every, first kept, episodes per checkpoint, hidden,
#                               batch, learning rate, replay capacity (None: every step), rollout envs per task.
PRESETS = {
    ("point-robot", "cpu"):              Preset(    5_000,   2_000,    200,   2_200, 50,   64,  128, 3e-4,    None, 50),
    ("point-robot", "reference"):        Preset(    5_000,   2_000,    200,   2_200, 50, 1024, 1024, 1e-4,    None, 50),
    ("cheetah-vel", "cpu"):              Preset(   50_000,   5_000,  5_000,  10_000, 10,   64,  128, 1e-3,    None, 10),
    ("cheetah-vel", "reference"):        Preset(1_000_000,  50_000, 50_000, 100_000, 50, 1024, 1024, 1e-4,    None, 10),
    ("ant-goal", "cpu"):                 Preset(  100_000,   5_000,  5_000,  10_000,  5,  128,  128, 3e-4,    None, 10),
    ("ant-goal", "reference"):           Preset(1_000_000,  50_000, 50_000, 100_000, 50, 1024, 1024, 1e-4,    None, 10),
    ("ant-dir", "cpu"):                  Preset(   50_000,   5_000,  5_000,  10_000, 10,   64,  128, 1e-3,    None, 10),
    ("ant-dir", "reference"):            Preset(1_000_000,  50_000, 50_000, 100_000, 50, 1024, 1024, 1e-4,    None, 10),
    ("humanoid-dir", "cpu"):             Preset(   25_000,   5_000,  2_500,   7_500, 20,   64,   64, 1e-3,    None, 10),
    ("humanoid-dir", "reference"):       Preset(1_000_000,  50_000, 50_000,  50_000, 50, 1024, 1024, 1e-4, 300_000, 10),
    ("hopper-rand-params", "cpu"):       Preset(   50_000,   5_000,  5_000,  10_000, 10,   64,  128, 1e-3,    None, 10),
    ("hopper-rand-params", "reference"): Preset(1_000_000,  50_000, 50_000,  50_000, 50, 1024, 1024, 1e-4,    None, 10),
    ("walker-rand-params", "cpu"):       Preset(   50_000,   5_000,  5_000,  10_000, 10,   64,  128, 1e-3,    None, 10),
    ("walker-rand-params", "reference"): Preset(1_000_000,  50_000, 50_000,  50_000, 50, 1024, 1024, 1e-4,    None, 10),
}  # ant-dir is not in CSRO: its reference row is ant-goal's. Humanoid's replay: capped for 64 GB (Args.buffer_size).
# Humanoid's cpu row: half the steps and batch of the others (its 348-dim updates made 50,000 steps take 90 min here),
# 20 episodes per checkpoint (its episodes end early).
# Ant-goal's cpu row: chosen by probes of 4 test tasks (collect_sac.py --tasks, docs/families-and-datasets.md): at
# 2x64 / 1e-3 SAC stalled near -350 to -400 with rising control cost; 2x128 / 3e-4 learns twice as fast (-330 at 40k,
# -284 at 90k steps) and 100,000 steps of it fit 150 minutes on one core. 5 episodes per checkpoint: the 18 checkpoints
# (the reference's count) hold 18,000 transitions per task, about what the other rows keep.
# fmt: on
# SAC constants of the reference (pytorch_sac's config/agent/sac.yaml), the same in every preset.
GAMMA = 0.99
TAU = 0.005
TARGET_UPDATE_EVERY = 2  # updates between soft target-critic updates
INIT_TEMPERATURE = 0.1
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
# Streams of derived env-reset seeds: training episodes and checkpoint episodes never share a seed.
TRAIN_STREAM, ROLLOUT_STREAM = 0, 1


def resolve_settings(args: Args) -> Preset:
    """The preset's row with the command line's overrides, checked: raises ValueError with a one-line message."""
    omrl_envs.get_family(args.env_id)  # EnvIdError (a ValueError) for unknown ids
    if (args.env_id, args.preset) not in PRESETS:
        presets = sorted({p for (_, p) in PRESETS})
        raise ValueError(f"unknown --preset {args.preset!r}: choose one of {', '.join(presets)}")
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Preset)}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    cfg = dataclasses.replace(PRESETS[args.env_id, args.preset], **overrides)
    if cfg.buffer_size is None:
        cfg = dataclasses.replace(cfg, buffer_size=cfg.total_steps)
    flag = lambda name: f"--{name.replace('_', '-')}"
    positive = ("total_steps", "checkpoint_every", "first_checkpoint", "episodes_per_checkpoint", "hidden_dim")
    for name in (*positive, "batch_size", "learning_rate", "buffer_size"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{flag(name)} must be positive (got {getattr(cfg, name)})")
    if not 0 <= cfg.random_steps <= cfg.total_steps:
        raise ValueError(
            f"--random-steps must be between 0 and --total-steps={cfg.total_steps} (got {cfg.random_steps})"
        )
    if cfg.first_checkpoint % cfg.checkpoint_every:
        raise ValueError(
            f"--first-checkpoint must be a multiple of --checkpoint-every={cfg.checkpoint_every} "
            f"(got {cfg.first_checkpoint})"
        )
    if cfg.first_checkpoint >= cfg.total_steps:
        raise ValueError(
            f"--first-checkpoint must be below --total-steps={cfg.total_steps} (got {cfg.first_checkpoint})"
        )
    return cfg


def probe_tasks(args: Args) -> list[int] | None:
    """The probed task indices in ascending order (None: all tasks), checked: raises ValueError with a one-line
    message. Sorted, so that the same set is the same probe (the same settings for a resume) in any order."""
    if args.tasks is None:
        return None
    tasks = [int(t) for t in args.tasks]
    if not tasks:
        raise ValueError("--tasks needs at least one task index (leave it out for all tasks)")
    outside = [t for t in tasks if not 0 <= t < omrl_envs.NUM_TASKS]
    if outside:
        raise ValueError(f"--tasks must be task indices in [0, {omrl_envs.NUM_TASKS}) (got {outside})")
    repeated = sorted({t for t in tasks if tasks.count(t) > 1})
    if repeated:
        raise ValueError(f"--tasks must not repeat a task (got {repeated} more than once)")
    return sorted(tasks)


def kept_checkpoints(cfg: Preset) -> list[int]:
    """The reference's `range(first, num_train_steps, spacing)`: Point-Robot 2200, 2400, ..., 4800."""
    return list(range(cfg.first_checkpoint, cfg.total_steps, cfg.checkpoint_every))


def derived_seed(*keys: int) -> int:
    """A reset seed that is a pure function of (run seed, stream, task, step, ...): reproducible after a resume."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


# ------------------------------------------------------------------------------------------------
# Replay: one buffer per task, all filled in lockstep, stored as (tasks, capacity, dim) tensors
# ------------------------------------------------------------------------------------------------
REPLAY_KEYS = ("observations", "actions", "rewards", "next_observations", "not_dones")


class ReplayBuffers:
    def __init__(self, num_tasks: int, capacity: int, obs_dim: int, act_dim: int, device: torch.device):
        dims = {"observations": obs_dim, "actions": act_dim, "rewards": 0, "next_observations": obs_dim, "not_dones": 0}
        self.data = {k: torch.zeros((num_tasks, capacity, d) if d else (num_tasks, capacity)) for k, d in dims.items()}
        self.data = {k: v.to(device) for k, v in self.data.items()}
        self.capacity, self.num_added, self.device = capacity, 0, device
        self.task_rows = torch.arange(num_tasks, device=device)[:, None]

    def add(self, obs, actions, rewards, next_obs, terminations):
        """One transition per task (arrays with a leading task dimension). Truncations bootstrap: not_done = 1."""
        position = self.num_added % self.capacity
        arrays = (obs, actions, rewards, next_obs, 1.0 - terminations)
        for key, array in zip(REPLAY_KEYS, arrays):
            self.data[key][:, position] = torch.as_tensor(array, dtype=torch.float32, device=self.device)
        self.num_added += 1

    def sample(self, batch_size: int, generator: torch.Generator) -> dict:
        """A minibatch per task, (tasks, batch, dim): task t's rows come from task t's buffer only."""
        size = min(self.num_added, self.capacity)
        index = torch.randint(0, size, (len(self.task_rows), batch_size), generator=generator, device=self.device)
        return {key: value[self.task_rows, index] for key, value in self.data.items()}

    def segment(self, start: int, stop: int) -> dict:
        """Transitions added at steps [start, stop) still held, as NumPy arrays (for the resume state)."""
        steps = np.arange(max(start, stop - self.capacity), stop)
        positions = torch.as_tensor(steps % self.capacity, device=self.device)
        return {"steps": steps, **{k: v[:, positions].cpu().numpy() for k, v in self.data.items()}}

    def load_segment(self, segment: dict):
        positions = torch.as_tensor(segment["steps"] % self.capacity, device=self.device)
        for key in REPLAY_KEYS:
            self.data[key][:, positions] = torch.as_tensor(segment[key], device=self.device)
        self.num_added = max(self.num_added, int(segment["steps"][-1]) + 1)


# ------------------------------------------------------------------------------------------------
# Networks with a leading task dimension: x (tasks, batch, in) -> (tasks, batch, out)
# ------------------------------------------------------------------------------------------------
class EnsembleLinear(nn.Module):
    """`ensemble_size` independent linear layers applied with one batched matmul."""

    def __init__(self, ensemble_size: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, out_features))
        for weight in self.weight.data:  # orthogonal init per member, zero bias (pytorch_sac's weight_init)
            nn.init.orthogonal_(weight)

    def forward(self, x):
        return torch.baddbmm(self.bias, x, self.weight)


def ensemble_mlp(ensemble_size: int, in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The reference's MLP (2 hidden layers, ReLU), one per ensemble member."""
    return nn.Sequential(
        EnsembleLinear(ensemble_size, in_dim, hidden_dim),
        nn.ReLU(),
        EnsembleLinear(ensemble_size, hidden_dim, hidden_dim),
        nn.ReLU(),
        EnsembleLinear(ensemble_size, hidden_dim, out_dim),
    )


class Actor(nn.Module):
    """tanh-squashed diagonal Gaussian with log std squashed into [LOG_STD_MIN, LOG_STD_MAX] (pytorch_sac)."""

    def __init__(self, num_tasks: int, obs_dim: int, act_dim: int, hidden_dim: int):
        super().__init__()
        self.net = ensemble_mlp(num_tasks, obs_dim, hidden_dim, 2 * act_dim)

    def forward(self, obs, noise):
        """A reparameterised sample (noise ~ N(0, I) from the caller's generator) and its log-probability."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        pre_tanh = mean + log_std.exp() * noise
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), the numerically stable form
        log_prob = log_prob - (2 * (math.log(2) - pre_tanh - F.softplus(-2 * pre_tanh))).sum(-1)
        return torch.tanh(pre_tanh), log_prob


class TwinCritic(nn.Module):
    """Both Q networks of every task in one ensemble of 2 x tasks members: output (2, tasks, batch)."""

    def __init__(self, num_tasks: int, obs_dim: int, act_dim: int, hidden_dim: int):
        super().__init__()
        self.net = ensemble_mlp(2 * num_tasks, obs_dim + act_dim, hidden_dim, 1)

    def forward(self, obs, actions):
        x = torch.cat([obs, actions], dim=-1)
        return self.net(x.repeat(2, 1, 1)).view(2, *x.shape[:-1])


# ------------------------------------------------------------------------------------------------
# SAC update for all tasks at once
# ------------------------------------------------------------------------------------------------
class BatchedSAC(nn.Module):
    """`num_tasks` independent SAC learners (pytorch_sac's update) sharing only the optimiser calls."""

    def __init__(self, num_tasks, obs_dim, act_dim, hidden_dim, learning_rate, device):
        super().__init__()
        self.num_tasks, self.act_dim, self.device = num_tasks, act_dim, device
        self.actor = Actor(num_tasks, obs_dim, act_dim, hidden_dim)
        self.critic = TwinCritic(num_tasks, obs_dim, act_dim, hidden_dim)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.full((num_tasks,), math.log(INIT_TEMPERATURE)))
        self.target_entropy = -float(act_dim)
        self.to(device)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=learning_rate)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=learning_rate)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=learning_rate)
        self.num_updates = 0

    def noise(self, batch_shape, generator):
        return torch.randn((*batch_shape, self.act_dim), generator=generator, device=self.device)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """Stochastic actions for observations (tasks, n, obs_dim): one batched forward for every task and env."""
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        action, _ = self.actor(obs, self.noise(obs.shape[:-1], generator))
        return action.cpu().numpy()

    def update(self, batch: dict, generator: torch.Generator) -> dict:
        """One SAC update of every task's learner on its own minibatch. Losses are sums over tasks of per-task means,
        so each task's gradient is exactly its single-task gradient; Adam then acts elementwise."""
        obs, actions, next_obs = batch["observations"], batch["actions"], batch["next_observations"]
        alpha = self.log_alpha.exp().detach()[:, None]  # (tasks, 1)

        with torch.no_grad():
            next_actions, next_log_prob = self.actor(next_obs, self.noise(next_obs.shape[:-1], generator))
            target_v = self.critic_target(next_obs, next_actions).min(0).values - alpha * next_log_prob
            target_q = batch["rewards"] + batch["not_dones"] * GAMMA * target_v
        q = self.critic(obs, actions)  # (2, tasks, batch)
        critic_loss = (q - target_q).pow(2).mean(-1).sum()  # per task: mse(Q1) + mse(Q2)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        new_actions, log_prob = self.actor(obs, self.noise(obs.shape[:-1], generator))
        self.critic.requires_grad_(False)  # the actor loss needs gradients to the actions only
        actor_q = self.critic(obs, new_actions).min(0).values
        self.critic.requires_grad_(True)
        actor_loss = (alpha * log_prob - actor_q).mean(-1).sum()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()

        alpha_loss = (self.log_alpha.exp()[:, None] * (-log_prob - self.target_entropy).detach()).mean(-1).sum()
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optimizer.step()

        self.num_updates += 1
        if self.num_updates % TARGET_UPDATE_EVERY == 0:
            with torch.no_grad():
                for param, target_param in zip(self.critic.parameters(), self.critic_target.parameters()):
                    target_param.lerp_(param, TAU)
        return {
            "critic_loss": critic_loss.detach() / self.num_tasks,
            "actor_loss": actor_loss.detach() / self.num_tasks,
            "alpha_loss": alpha_loss.detach() / self.num_tasks,
            "alpha": alpha.mean(),
            "entropy": -log_prob.detach().mean(),
        }

    def full_state(self) -> dict:
        """Networks, temperature, optimisers and update count: everything needed to continue training."""
        return {
            "model": self.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_full_state(self, state: dict):
        self.load_state_dict(state["model"])
        for name in ("actor_optimizer", "critic_optimizer", "alpha_optimizer"):
            getattr(self, name).load_state_dict(state[name])
        self.num_updates = state["num_updates"]


# ------------------------------------------------------------------------------------------------
# Checkpoint episodes: `episodes` per task with the stochastic policy, several envs per task at once
# ------------------------------------------------------------------------------------------------
def collect_checkpoint_episodes(
    learner, envs, task_ids, episodes, checkpoint, first_episode_id, seed, generator, horizon, obs_dim, act_dim
):
    """Roll out each learner's current stochastic policy for `episodes` episodes; envs[t] holds the envs (slots) of
    learner t, whose task is task_ids[t], all slots of all learners stepped with one batched forward per step.
    Returns {key: array} with `task` (the real task id), `checkpoint` and `episode` (first_episode_id,
    first_episode_id + 1, ...) columns, rows ordered by (learner, episode), and the mean return per learner."""
    num_tasks, num_slots = len(envs), len(envs[0])
    obs = np.zeros((num_tasks, num_slots, obs_dim), np.float32)
    active = np.zeros((num_tasks, num_slots), bool)
    episode_of = np.zeros((num_tasks, num_slots), np.int64)
    length = np.zeros((num_tasks, num_slots), np.int64)
    record = {
        "observations": np.zeros((num_tasks, num_slots, horizon, obs_dim), np.float32),
        "actions": np.zeros((num_tasks, num_slots, horizon, act_dim), np.float32),
        "rewards": np.zeros((num_tasks, num_slots, horizon), np.float32),
        "next_observations": np.zeros((num_tasks, num_slots, horizon, obs_dim), np.float32),
        "terminations": np.zeros((num_tasks, num_slots, horizon), np.float32),
        "truncations": np.zeros((num_tasks, num_slots, horizon), np.float32),
    }
    finished = [dict() for _ in range(num_tasks)]  # task -> {episode id: arrays}
    started = np.zeros(num_tasks, np.int64)

    def start_episode(task, slot):
        episode = started[task]
        started[task] += 1
        reset_seed = derived_seed(seed, ROLLOUT_STREAM, task_ids[task], checkpoint, episode)  # a probe's seeds too
        obs[task, slot] = envs[task][slot].reset(seed=reset_seed)[0]
        active[task, slot], episode_of[task, slot], length[task, slot] = True, episode, 0

    for task in range(num_tasks):
        for slot in range(min(num_slots, episodes)):
            start_episode(task, slot)
    step_next_obs = np.zeros_like(obs)
    step_rewards = np.zeros((num_tasks, num_slots), np.float32)
    step_terminations = np.zeros((num_tasks, num_slots), bool)
    step_truncations = np.zeros((num_tasks, num_slots), bool)
    while active.any():
        actions = learner.act(obs, generator)
        tasks, slots = np.nonzero(active)
        for task, slot in zip(tasks, slots):
            next_obs, reward, terminated, truncated, _ = envs[task][slot].step(actions[task, slot])
            step_next_obs[task, slot], step_rewards[task, slot] = next_obs, reward
            step_terminations[task, slot], step_truncations[task, slot] = terminated, truncated
        at = (tasks, slots, length[tasks, slots])
        record["observations"][at] = obs[tasks, slots]
        record["actions"][at] = actions[tasks, slots]
        record["rewards"][at] = step_rewards[tasks, slots]
        record["next_observations"][at] = step_next_obs[tasks, slots]
        record["terminations"][at] = step_terminations[tasks, slots]
        record["truncations"][at] = step_truncations[tasks, slots]
        length[tasks, slots] += 1
        obs[tasks, slots] = step_next_obs[tasks, slots]
        done = step_terminations[tasks, slots] | step_truncations[tasks, slots]
        for task, slot in zip(tasks[done], slots[done]):
            n = length[task, slot]
            finished[task][episode_of[task, slot]] = {k: v[task, slot, :n].copy() for k, v in record.items()}
            active[task, slot] = False
            if started[task] < episodes:
                start_episode(task, slot)

    parts, mean_returns = [], np.zeros(num_tasks)
    for task in range(num_tasks):
        for episode in range(episodes):
            data = finished[task][episode]
            n = len(data["rewards"])
            ids = {"task": task_ids[task], "checkpoint": checkpoint, "episode": first_episode_id + episode}
            ids = {k: np.full(n, v) for k, v in ids.items()}
            parts.append({**data, **{k: v.astype(np.int64) for k, v in ids.items()}})
        mean_returns[task] = np.mean([finished[task][e]["rewards"].sum(dtype=np.float64) for e in range(episodes)])
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, mean_returns


# ------------------------------------------------------------------------------------------------
# Files: resume state, dataset, plot
# ------------------------------------------------------------------------------------------------
def atomic_save(path: Path, save):
    """Write through a temporary file and os.replace: a killed process never leaves a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        save(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_npz(path: Path, arrays: dict):
    atomic_save(path, lambda f: np.savez(f, **arrays))


def save_torch(path: Path, obj):
    atomic_save(path, lambda f: torch.save(obj, f))


def code_version() -> dict:
    here = Path(__file__).resolve().parent
    try:
        git = ["git", "-C", str(here)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--", "collect_sac.py", "omrl_envs.py"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, changed = "", ""
    versions = {}
    for package in ("torch", "gymnasium", "mujoco", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "git_commit": commit or None,
        "uncommitted_changes": bool(changed),  # to collect_sac.py or omrl_envs.py: the hashes below say which code
        "collect_sac_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "omrl_envs_sha256": hashlib.sha256(Path(omrl_envs.__file__).read_bytes()).hexdigest(),
        **versions,
    }


def plot_checkpoint_returns(path: Path, env_id: str, checkpoints, returns: np.ndarray, task_ids: list[int], title: str):
    """Mean return of each task's saved episodes per checkpoint (one line per task, returns[i] of task task_ids[i],
    coloured by its task id), the dataset at a glance."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    cmap, last_id = matplotlib.colormaps["viridis"], omrl_envs.NUM_TASKS - 1
    for task, task_returns in zip(task_ids, returns, strict=True):
        style = "--" if task in omrl_envs.TEST_TASKS else "-"
        ax.plot(checkpoints, task_returns, style, color=cmap(task / last_id), lw=0.8, alpha=0.8)
    ax.plot(checkpoints, returns.mean(0), "k-", lw=2.5, label="mean over tasks")
    if env_id == "point-robot":
        oracle = np.mean([omrl_envs.oracle_point_robot_return(t) for t in task_ids])
        ax.axhline(oracle, color="tab:red", ls=":", label=f"oracle, mean over tasks ({oracle:.2f})")
    norm = matplotlib.colors.Normalize(0, last_id)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="task index (dashed: test task)")
    ax.set(xlabel="SAC env steps per task (checkpoint)", ylabel="mean episode return", title=title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    atomic_save(path, lambda f: fig.savefig(f, format="png", dpi=110))


def fail(message: str):
    """Bad input: one line on stderr, exit status 1, no traceback."""
    raise SystemExit(f"collect_sac.py: error: {message}")


if __name__ == "__main__":
    args = tyro.cli(Args)
    try:
        cfg = resolve_settings(args)
        probe = probe_tasks(args)
    except ValueError as e:
        fail(str(e))
    family = omrl_envs.get_family(args.env_id)
    # Learner i trains on task task_ids[i]: its envs, reset seeds, files and manifest entries use the real task id.
    task_ids = list(range(omrl_envs.NUM_TASKS)) if probe is None else probe
    num_tasks, obs_dim, act_dim = len(task_ids), family.obs_dim, family.act_dim
    test = [i for i, task in enumerate(task_ids) if task in omrl_envs.TEST_TASKS]  # learners of test tasks
    checkpoints = kept_checkpoints(cfg)
    last_step = checkpoints[-1]  # steps after the last checkpoint would give no data

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    if device.type == "cuda":  # TF32 matmuls: several times FP32's throughput for the reference's 2x1024 networks
        torch.set_float32_matmul_precision("high")
    elif "OMP_NUM_THREADS" not in os.environ:
        # The CPU presets' updates are small: on a 2-core machine a second thread saved at best 20 % of the
        # point-robot run (27 s vs 33 s), but while another job used a core it took 65 s, once 596 s (spinning).
        torch.set_num_threads(1)
    settings = {"env_id": args.env_id, "preset": args.preset, "seed": args.seed, "device": device.type}
    settings |= dataclasses.asdict(cfg) | {"gamma": GAMMA, "tau": TAU, "init_temperature": INIT_TEMPERATURE}
    settings |= {"target_update_every": TARGET_UPDATE_EVERY, "log_std_bounds": [LOG_STD_MIN, LOG_STD_MAX]}
    if probe is not None:  # a probe's only: a full collection's settings (in its fingerprint) stay as they were
        settings["tasks"] = probe

    # Dataset directory: refuse to touch a finished dataset; resume an unfinished run with the same settings.
    dataset_dir = Path(args.data_dir) / args.env_id
    resume_dir = dataset_dir / "resume"
    manifest_path = dataset_dir / omrl_envs.MANIFEST
    if args.overwrite:
        manifest_path.unlink(missing_ok=True)  # first: a crash below never leaves a "finished" dataset behind
        shutil.rmtree(resume_dir, ignore_errors=True)
        for stale in [*dataset_dir.glob("task_*.npz"), dataset_dir / "checkpoint_returns.png"]:
            stale.unlink(missing_ok=True)
    elif manifest_path.is_file():
        fail(f"{dataset_dir} already holds a finished dataset; pass --overwrite to rebuild it, or another --data-dir")
    resume_state = None
    if (resume_dir / "state.pt").is_file():
        resume_state = torch.load(resume_dir / "state.pt", map_location=device, weights_only=True)
        old = resume_state["settings"]
        if old != settings:
            keys = {**old, **settings}  # both: a probe's `tasks` is missing from a full run's settings
            diff = ", ".join(f"{k}: {old.get(k)} -> {settings.get(k)}" for k in keys if old.get(k) != settings.get(k))
            fail(
                f"{resume_dir} holds an unfinished run with other settings ({diff}); "
                "rerun with its flags to continue it, or pass --overwrite to start over"
            )
    resume_dir.mkdir(parents=True, exist_ok=True)

    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = Path(args.runs_dir) / run_name
    writer = SummaryWriter(str(run_dir))
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in settings.items()))
    omrl_envs.atomic_write_json(run_dir / "args.json", {**vars(args), "settings": settings})

    # Learners, buffers, RNG streams (replay sampling and policy noise: torch; warm-up actions: NumPy)
    learner = BatchedSAC(num_tasks, obs_dim, act_dim, cfg.hidden_dim, cfg.learning_rate, device)
    buffers = ReplayBuffers(num_tasks, cfg.buffer_size, obs_dim, act_dim, device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    np_rng = np.random.default_rng(args.seed)
    step, checkpoint_returns, elapsed_before = 0, {}, 0.0
    if resume_state is not None:
        learner.load_full_state(resume_state["learner"])
        generator.set_state(resume_state["torch_rng"].cpu())
        np_rng.bit_generator.state = resume_state["np_rng"]
        step, checkpoint_returns = resume_state["step"], resume_state["checkpoint_returns"]
        elapsed_before = resume_state["elapsed_s"]
        for start in range(0, step, cfg.checkpoint_every):
            stop = start + cfg.checkpoint_every
            if stop > step - cfg.buffer_size:  # older segments are overwritten in the ring buffer anyway
                with np.load(resume_dir / f"replay_{stop:09d}.npz") as f:
                    buffers.load_segment({k: f[k] for k in f.files})
        buffers.num_added = step
        print(f"resuming {dataset_dir} at env step {step} of {last_step} ({len(checkpoint_returns)} checkpoints done)")

    envs = [omrl_envs.make_env(args.env_id, task) for task in task_ids]
    rollout_slots = min(cfg.rollout_envs, cfg.episodes_per_checkpoint)
    rollout_envs = [[omrl_envs.make_env(args.env_id, task) for _ in range(rollout_slots)] for task in task_ids]

    def reset_training_envs(at_step):
        """Training episodes restart at every checkpoint interval, seeded by (seed, task, step): a resumed run
        continues exactly as an uninterrupted one (an episode cut there ends as a truncation: it bootstraps)."""
        seeds = [derived_seed(args.seed, TRAIN_STREAM, task, at_step) for task in task_ids]
        return np.stack([env.reset(seed=s)[0] for env, s in zip(envs, seeds)]).astype(np.float32)

    obs = reset_training_envs(step)
    episode_returns = np.zeros(num_tasks)
    start_time, start_step = time.time(), step
    progress = tqdm(total=last_step, initial=step, unit="step", desc=f"{args.env_id} x {num_tasks} tasks")
    while step < last_step:
        # ALGO LOGIC: put action logic here
        if step < cfg.random_steps:
            actions = np_rng.uniform(-1.0, 1.0, (num_tasks, act_dim)).astype(np.float32)
        else:
            actions = learner.act(obs[:, None], generator)[:, 0]

        # TRY NOT TO MODIFY: execute the game and log data.
        next_obs = np.zeros_like(obs)
        rewards, terminations, truncations = np.zeros(num_tasks), np.zeros(num_tasks), np.zeros(num_tasks, bool)
        for task, env in enumerate(envs):
            next_obs[task], rewards[task], terminations[task], truncations[task], _ = env.step(actions[task])
        buffers.add(obs, actions, rewards, next_obs, terminations)
        episode_returns += rewards
        obs = next_obs
        finished = np.flatnonzero(terminations.astype(bool) | truncations)
        if len(finished):
            writer.add_scalar("charts/episodic_return", episode_returns[finished].mean(), step + 1)
        for task in finished:
            episode_returns[task] = 0.0
            obs[task] = envs[task].reset()[0]
        step += 1

        # ALGO LOGIC: training.
        if step > cfg.random_steps:
            losses = learner.update(buffers.sample(cfg.batch_size, generator), generator)
            if step % 100 == 0:
                for key, value in losses.items():
                    writer.add_scalar(f"losses/{key}", value.item(), step)
        if step % 100 == 0 or step % cfg.checkpoint_every == 0:
            sps = int((step - start_step) * num_tasks / (time.time() - start_time))
            writer.add_scalar("charts/SPS", sps, step)
            latest = max(checkpoint_returns, default=None)
            latest = f" | ckpt {latest}: return {np.mean(checkpoint_returns[latest]):.2f}" if latest else ""
            progress.set_postfix_str(f"env-steps/s={sps}{latest}", refresh=False)
        progress.update(1)

        if step % cfg.checkpoint_every == 0:
            if step in checkpoints:
                episodes, returns = collect_checkpoint_episodes(
                    learner,
                    rollout_envs,
                    task_ids,
                    cfg.episodes_per_checkpoint,
                    step,
                    checkpoints.index(step) * cfg.episodes_per_checkpoint,  # episode ids are unique within a task
                    args.seed,
                    generator,
                    family.horizon,
                    obs_dim,
                    act_dim,
                )
                save_npz(resume_dir / f"episodes_{step:09d}.npz", episodes)
                checkpoint_returns[step] = returns.tolist()
                writer.add_scalar("eval/checkpoint_return", returns.mean(), step)
                if test:  # a probe may hold no test task
                    writer.add_scalar("eval/checkpoint_return_test_tasks", returns[test].mean(), step)
                if probe is not None:  # a probe's point: each task's learning curve
                    for task, task_return in zip(task_ids, returns, strict=True):
                        writer.add_scalar(f"eval/checkpoint_return_task_{task:02d}", task_return, step)
                progress.set_postfix_str(f"env-steps/s={sps} | ckpt {step}: return {returns.mean():.2f}")
            # Resume state: this interval's transitions, then (last, atomically) everything else.
            save_npz(resume_dir / f"replay_{step:09d}.npz", buffers.segment(step - cfg.checkpoint_every, step))
            state = {
                "settings": settings,
                "step": step,
                "learner": learner.full_state(),
                "torch_rng": generator.get_state(),
                "np_rng": np_rng.bit_generator.state,
                "checkpoint_returns": checkpoint_returns,
                "elapsed_s": elapsed_before + time.time() - start_time,
            }
            save_torch(resume_dir / "state.pt", state)
            for stop in range(cfg.checkpoint_every, step - cfg.buffer_size + 1, cfg.checkpoint_every):
                (resume_dir / f"replay_{stop:09d}.npz").unlink(missing_ok=True)  # overwritten in the ring: not needed
            obs = reset_training_envs(step)
            episode_returns[:] = 0.0
    progress.close()
    for env in envs + [env for slots in rollout_envs for env in slots]:
        env.close()

    # The dataset: each task's episodes over all kept checkpoints, then the plot, then the manifest (last). The replay
    # is freed first, and each array of the episodes once it is concatenated: the data are held once (plus one array).
    del buffers
    parts = []
    for checkpoint in checkpoints:
        with np.load(resume_dir / f"episodes_{checkpoint:09d}.npz") as f:
            parts.append({k: f[k] for k in f.files})
    everything = {k: np.concatenate([p.pop(k) for p in parts]) for k in list(parts[0])}
    for task in task_ids:
        rows = everything["task"] == task
        data = {k: v[rows] for k, v in everything.items() if k != "task"}
        omrl_envs.write_task_data(dataset_dir, args.env_id, task, data)
    returns = np.array([checkpoint_returns[c] for c in checkpoints]).T  # (learners, checkpoints)
    title = f"{args.env_id} dataset" if probe is None else f"{args.env_id} probe of tasks {probe}"
    plot_checkpoint_returns(dataset_dir / "checkpoint_returns.png", args.env_id, checkpoints, returns, task_ids, title)
    test_means = returns[test].mean(0).tolist() if test else None  # None: a probe without a test task
    probe_entry = {} if probe is None else {omrl_envs.PROBE_KEY: probe}  # the mark the training scripts refuse
    manifest = omrl_envs.make_manifest(
        args.env_id,
        seed=args.seed,
        settings=settings,
        code_version=code_version(),
        checkpoints=checkpoints,
        **probe_entry,
        checkpoint_returns={str(task): returns[i].tolist() for i, task in enumerate(task_ids)},
        checkpoint_returns_mean={"all_tasks": returns.mean(0).tolist(), "test_tasks": test_means},
        transitions_per_task=[int((everything["task"] == t).sum()) for t in task_ids],
        collection_wall_time_s=round(elapsed_before + time.time() - start_time, 1),
        complete=True,
    )
    omrl_envs.write_manifest(dataset_dir, manifest)
    shutil.rmtree(resume_dir)
    torch.save({"learner": learner.state_dict(), "settings": settings}, run_dir / "sac_learners.pt")
    writer.close()

    # A probe's table adds a column per task (its learning curve) and shows "-" for the mean of no test task.
    per_task = "" if probe is None else "".join(f" {f'task {task}':>8}" for task in task_ids)
    print(f"{'checkpoint':>10} {'all tasks':>10} {'test tasks':>10}" + per_task)
    for i, checkpoint in enumerate(checkpoints):
        test_mean = f"{returns[test, i].mean():>10.2f}" if test else f"{'-':>10}"
        per_task = "" if probe is None else "".join(f" {r:>8.2f}" for r in returns[:, i])
        print(f"{checkpoint:>10} {returns[:, i].mean():>10.2f} {test_mean}" + per_task)
    what = f"{num_tasks} tasks" if probe is None else f"a probe of tasks {probe}"
    print(
        f"wrote {dataset_dir} ({what}, {len(everything['task']) // num_tasks} transitions per task) "
        f"in {manifest['collection_wall_time_s']:.0f} s"
    )
