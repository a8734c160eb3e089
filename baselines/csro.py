# CSRO: Context Shift Reduction for Offline meta-RL, the baseline SELECT builds on; `diff baselines/csro.py select.py`
# shows what SELECT changes. Gao et al., NeurIPS 2023. Spec: shared/spec/algorithms.md §1 and §4 and
# benchmark.md §3-4. What comes from where:
#   task inference     CSRO (Gao et al., NeurIPS 2023; official code MoreanP/CSRO): transition encoder with mean
#                      aggregation, FOCAL's distance-metric loss and a CLUB upper bound with a variational net.
#                      The CLUB double mean is computed in O(b) per task (the reference materialises all b^2 pairs).
#   offline RL         BRAC (Wu, Tucker and Nachum, 2019) on SAC with a V net, as CSRO's code (from FOCAL-ICLR): twin
#                      Q, V with a target copy, tanh-Gaussian actor, a KL(pi || behaviour) penalty in dual form with
#                      an adaptive weight; none on Point-Robot (plain offline SAC), as CSRO's config.
#   meta-test          the four protocols of benchmark.md §3; CSRO's own is online-random (HEADLINE_PROTOCOL).
# Usage: python baselines/csro.py --env-id point-robot --seed 1   (python baselines/csro.py --help lists every option)
import copy
import functools
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads fight other processes
# for the cores (measured: 0.5-1.5 instead of 2.5 steps/s at CSRO sizes). Set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter

sys.path.append(str(Path(__file__).resolve().parents[1]))  # the repository root, last: stdlib's select stays first
import omrl_envs

# ---- SHARED BLOCK: benchmark constants (identical in select.py and baselines/*.py; tests check) ----
PROTOCOLS = ("offline", "online-prior", "online-random", "online-proximal")  # benchmark.md §3
SCORED_BUDGET = {"point-robot": 400, "ant-goal": 800}  # scored transitions per (task, run); other families 600
PRIOR_EPISODES = {"point-robot": 1}  # online-prior: episodes with z at the prior; other families 2
CONTEXT_SHIFT_REFERENCE_SIZE = 1024  # offline transitions per test task behind the reference z of the diagnostic
# ---- END SHARED BLOCK: benchmark constants ----
HEADLINE_PROTOCOL = "online-random"  # the meta-test of CSRO's paper: its "non-prior" context collection


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of the experiment (networks, meta-batches, target noise)"""
    torch_deterministic: bool = True
    """if toggled, sets `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, runs on CUDA when it is available"""
    track: bool = False
    """if toggled, the run is tracked with Weights and Biases (W&B; needs requirements-extras.txt)"""
    wandb_project_name: str = "select-omrl"
    """the W&B project of the run"""
    wandb_entity: str | None = None
    """the entity (team) of the W&B project (None: your W&B default entity)"""
    env_id: str = "point-robot"
    """task family: one of omrl_envs.ENV_IDS"""
    data_dir: str = "data"
    """datasets live in <data-dir>/<env-id>/ (written by collect_sac.py)"""
    preset: str = "cpu"
    """sizes of the options left unset (PRESETS): "cpu" (for a 2-core CPU) or "reference" (the papers', CSRO's)"""

    # Evaluation and logging
    runs_dir: str = "runs"
    """the run record goes to <runs-dir>/<run-name>/"""
    run_name: str | None = None
    """name of the run directory (default: {env_id}__{exp_name}__{seed}__{unix time})"""
    eval_every: int | None = None
    """evaluate every this many gradient steps, and at the end (None: --preset)"""
    protocols: tuple[str, ...] = PROTOCOLS
    """meta-test protocols to run: offline, online-prior, online-random, online-proximal"""
    eval_runs: int = 2
    """meta-test runs per test task (benchmark: 2)"""
    eval_seed: int = 0
    """seed of the meta-test (start states, exploration noise, offline context draws): fixed across evaluations"""
    proximal_noise_std: float | None = None
    """sigma_test of eq. 4: std of the Gaussian noise added to pi(s, z) for proximal collection (None: table)"""
    proximal_noise_min: float = -0.5
    """eps_min of eq. 4: lower clip of the proximal noise"""
    proximal_noise_max: float = 0.5
    """eps_max of eq. 4: upper clip of the proximal noise"""
    reinfer: str = "round"
    """when online-random and online-proximal re-infer z: 'round' after each exploration round, before its scored
    episode (algorithms.md §3); 'csro' after each scored episode once k horizons are scored (CSRO's code)"""
    log_every: int = 500
    """write the training losses (and check them for NaN/Inf) every this many gradient steps"""
    eval_checkpoint: str | None = None
    """re-evaluate this checkpoint.pt without training; unset options come from the checkpoint's args"""
    eval_output: str | None = None
    """where --eval-checkpoint writes its JSON (default: reeval.json beside the checkpoint)"""
    resume: bool = False
    """if toggled, continue the run <runs-dir>/<run-name> from its last checkpoint (its options, overridable)"""

    # Algorithm: task inference (algorithms.md §1)
    num_train_steps: int | None = None
    """number of gradient steps (None: --preset)"""
    meta_batch_size: int | None = None
    """distinct train tasks per gradient step (None: table)"""
    batch_size: int | None = None
    """RL transitions per task per gradient step (None: --preset)"""
    context_size: int | None = None
    """context transitions per task per gradient step, drawn i.i.d. from its data (None: --preset)"""
    latent_dim: int | None = None
    """dimension of the task embedding z (None: table)"""
    encoder_hidden: tuple[int, ...] | None = None
    """hidden widths of the context encoder and of the CLUB net (None: table)"""
    focal_weight: float = 10.0
    """weight of FOCAL's distance-metric loss on the encoder"""
    club_weight: float | None = None
    """weight of the CLUB upper bound on the encoder, 0 disables it (None: table)"""
    club_model_weight: float = 10.0
    """weight of the Gaussian NLL that fits the CLUB net q_psi(z | s, a)"""
    # Algorithm: BRAC on SAC (algorithms.md §4)
    rl_hidden: tuple[int, ...] | None = None
    """hidden widths of every RL network (None: --preset)"""
    learning_rate: float = 3e-4
    """Adam learning rate of every network but the dual critic"""
    gamma: float | None = None
    """discount factor (None: table)"""
    tau: float = 0.005
    """soft target update rate"""
    policy_delay: int = 1
    """actor and target updates every this many critic updates"""
    alpha: float | None = None
    """initial weight alpha of BRAC's KL(pi || behaviour) penalty on the actor (None: table)"""
    alpha_max: float | None = None
    """alpha is used clipped to [0, alpha-max]; 0 disables BRAC: plain offline SAC (None: table)"""
    reward_scale: float | None = None
    """reward scale in the Q target; the entropy weight is 1, so this is SAC's inverse temperature (None: table)"""
    target_divergence: float = 0.05
    """alpha <- alpha + (mean D - target-divergence) at every actor update"""
    dual_critic_learning_rate: float = 1e-4
    """Adam learning rate of BRAC's dual critic c(s, a, z)"""
    dual_critic_steps: int = 3
    """updates of the dual critic per gradient step, each on a fresh batch of the meta-batch's tasks"""
    gradient_penalty_weight: float = 5.0
    """weight of the penalty on the dual critic"""
    gradient_penalty: str = "value"
    """penalty on the dual critic at interpolated actions: 'value' (the reference code's mean(max(|c| - 1, 0)^2)) or
    'gradient' (BRAC's mean(max(||dc/da|| - 1, 0)^2))"""
    policy_regularization: float = 1e-3
    """weight of the L2 penalties on the actor's pre-tanh mean and log-std"""
    normalize_states: bool | None = None
    """normalise states by the train data's mean and std, as TD3+BC (None: table)"""


# ---- SHARED BLOCK: presets (identical in select.py and baselines/*.py; tests check) ----
# Sizes by --preset, used where an option above is left at None: one row per option, one column per task family (the
# order of omrl_envs.ENV_IDS), as ENV_DEFAULTS. "reference": the papers' sizes, CSRO's configs (algorithms.md §1-2, §4;
# CSRO's iterations x 1,000 steps). "cpu" (the default): sized for a 2-core CPU. Its Point-Robot column is the preset
# behind the published Point-Robot numbers (minutes here; CSRO's sizes take hours). Its MuJoCo columns: RL nets 128x3,
# batch 64 per task, CSRO's context capped at 100; 7,000 steps (4,000 on humanoid-dir): the quick budget, where the
# slowest method's run (CSRO) fits 20 minutes on one thread beside a second job. It was chosen where SELECT's offline
# return slows down on cheetah-vel, so it is not neutral: some baselines still climb there. The comparison is the long
# budget (benchmarks/study.py --budget long: each method until its curve flattens). Ant-goal: 20,000 steps, its study's
# budget (the reference trains it twice as long as the other families; at 10,000 no part of any method had learnt).
# fmt: off
PRESETS = {
    "cpu": {  #            point-robot cheetah-vel ant-goal    ant-dir     humanoid    hopper      walker
        "context_size":    (128,        100,        100,        100,        100,        100,        100),
        "batch_size":      (64,         64,         64,         64,         64,         64,         64),
        "rl_hidden":       ((128,) * 3, (128,) * 3, (128,) * 3, (128,) * 3, (128,) * 3, (128,) * 3, (128,) * 3),
        "num_train_steps": (20_000,     7_000,      20_000,     7_000,      4_000,      7_000,      7_000),
        "eval_every":      (2_000,      1_000,      2_500,      1_000,      1_000,      1_000,      1_000),
    },
    "reference": {  #      point-robot cheetah-vel ant-goal    ant-dir     humanoid    hopper      walker
        "context_size":    (1024,       100,        512,        256,        256,        256,        256),
        "batch_size":      (256,        256,        256,        256,        256,        256,        256),
        "rl_hidden":       ((256,) * 3, (256,) * 3, (256,) * 3, (256,) * 3, (256,) * 3, (256,) * 3, (256,) * 3),
        "num_train_steps": (65_000,     105_000,    210_000,    105_000,    105_000,    105_000,    105_000),
        "eval_every":      (5_000,      5_000,      5_000,      5_000,      5_000,      5_000,      5_000),
    },
}
# fmt: on
# ---- END SHARED BLOCK: presets ----


# Per-env defaults (the sizes are in PRESETS), used where an option above is left at None: one row per option, one
# column per task family (the order of omrl_envs.ENV_IDS). The task-inference rows are CSRO's configs (algorithms.md
# §1; ant-dir has none: ant-goal's CLUB weight), except sigma_test: ours, see docs/select.md.
# fmt: off
ENV_DEFAULTS = {  #        point-robot cheetah-vel ant-goal    ant-dir     humanoid    hopper      walker
    "gamma":              (0.90,       0.99,       0.99,       0.99,       0.99,       0.99,       0.99),
    "club_weight":        (25,         10,         50,         50,         50,         25,         25),
    "latent_dim":         (20,         20,         20,         20,         20,         20,         40),
    "meta_batch_size":    (16,         16,         10,         16,         16,         16,         16),
    "encoder_hidden":     ((200,) * 3, (200,) * 3, (200,) * 3, (200,) * 3, (200,) * 3, (200,) * 3, (200,) * 3),
    "proximal_noise_std": (0.3,        0.3,        0.3,        0.3,        0.3,        0.3,        0.3),
    # BRAC: CSRO's configs (ant-dir: ant-goal's; Point-Robot: none, plain offline SAC); CSRO's code normalises no states
    "reward_scale":       (100,        5,          5,          5,          5,          5,          5),
    "alpha":              (0,          50,         500,        500,        500,        50,         50),
    "alpha_max":          (0,          2e3,        2e3,        2e3,        2e3,        1e4,        1e4),
    # states normalised on the MuJoCo families, as for every method (measured on cheetah-vel: docs/fidelity.md)
    "normalize_states":   (False,      True,       True,       True,       True,       True,       True),
}
# fmt: on


def resolve_args(args: Args) -> Args:
    """Fill the preset's sizes and the per-env defaults, check every value; a bad value stops with one line."""
    try:
        omrl_envs.get_family(args.env_id)
    except omrl_envs.EnvIdError as e:
        raise SystemExit(f"error: {e}") from None
    if args.preset not in PRESETS:
        raise SystemExit(f"error: unknown --preset {args.preset!r}: choose one of {', '.join(PRESETS)}")
    column = omrl_envs.ENV_IDS.index(args.env_id)
    table = {name: values[column] for name, values in (PRESETS[args.preset] | ENV_DEFAULTS).items()}
    args = replace(args, **{k: v for k, v in table.items() if getattr(args, k) is None})

    def check(ok: bool, message: str):
        if not ok:
            raise SystemExit(f"error: {message}")

    for name in ("num_train_steps", "meta_batch_size", "batch_size", "context_size", "latent_dim", "eval_every"):
        check(getattr(args, name) > 0, f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("eval_runs", "log_every", "policy_delay", "dual_critic_steps", "dual_critic_learning_rate"):
        check(getattr(args, name) > 0, f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    check(
        args.meta_batch_size <= len(omrl_envs.TRAIN_TASKS),
        f"--meta-batch-size must be at most {len(omrl_envs.TRAIN_TASKS)} (the distinct train tasks), "
        f"got {args.meta_batch_size}",
    )
    for name in ("encoder_hidden", "rl_hidden"):
        widths = getattr(args, name)
        check(len(widths) > 0 and min(widths) > 0, f"--{name.replace('_', '-')} needs positive widths, got {widths}")
    for name in ("focal_weight", "club_weight", "club_model_weight", "alpha", "alpha_max", "reward_scale"):
        check(getattr(args, name) >= 0, f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("gradient_penalty_weight", "policy_regularization"):
        check(getattr(args, name) >= 0, f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    penalty = args.gradient_penalty
    check(penalty in ("value", "gradient"), f"--gradient-penalty must be value or gradient, got {penalty!r}")
    check(args.learning_rate > 0, f"--learning-rate must be positive, got {args.learning_rate}")
    check(0 <= args.gamma < 1, f"--gamma must be in [0, 1), got {args.gamma}")
    check(0 < args.tau <= 1, f"--tau must be in (0, 1], got {args.tau}")
    check(
        args.proximal_noise_std >= 0, f"--proximal-noise-std (sigma_test) must be >= 0, got {args.proximal_noise_std}"
    )
    check(
        args.proximal_noise_min <= args.proximal_noise_max,
        f"--proximal-noise-min ({args.proximal_noise_min}) must not exceed --proximal-noise-max "
        f"({args.proximal_noise_max})",
    )
    for protocol in args.protocols:
        check(
            protocol in PROTOCOLS, f"unknown protocol {protocol!r} in --protocols: choose from {', '.join(PROTOCOLS)}"
        )
    check(args.reinfer in REINFER, f"unknown --reinfer {args.reinfer!r}: choose one of {', '.join(REINFER)}")
    check(len(args.protocols) > 0, "--protocols needs at least one protocol")
    return args


# ---- SHARED BLOCK: data (identical in select.py and baselines/*.py; tests check) ----
# Every transition of every task is one row of a single tensor on the device, laid out as
# [s, a, r, s', termination] (s and s' normalised when asked); a task is a contiguous slice (offset, count).
# A meta-batch is one gather: row = offset[task] + uniform integer below count[task], no Python loop over tasks.
@dataclass
class OfflineData:
    rows: torch.Tensor  # (num transitions, 2 * obs_dim + act_dim + 2), float32, on the device
    offsets: torch.Tensor  # (NUM_TASKS,) int64: first row of each task
    counts: torch.Tensor  # (NUM_TASKS,) int64: rows of each task
    obs_mean: np.ndarray  # state normalisation (zeros and ones when off)
    obs_std: np.ndarray
    obs_dim: int
    act_dim: int
    context_dim: int  # leading columns that form a context transition: (s, a, r) or (s, a, r, s')
    fingerprint: dict  # omrl_envs.dataset_fingerprint: what a checkpoint trained on this data records


def ensure_dataset(env_id: str, data_dir: str) -> Path:
    """The dataset directory; a missing dataset is built first by collect_sac.py at its default (cpu) preset, in
    view: about a minute for Point-Robot, about 160 minutes for Ant-Goal, 20-32 minutes for each other MuJoCo family
    measured on a 2-core CPU (docs/families-and-datasets.md)."""
    dataset_dir = Path(data_dir) / env_id
    if (dataset_dir / omrl_envs.MANIFEST).is_file():
        return dataset_dir
    command = f"python collect_sac.py --env-id {env_id} --data-dir {data_dir}"
    costs = {"point-robot": "about a minute", "ant-goal": "about 160 minutes on a 2-core CPU"}
    cost = costs.get(env_id, "20-32 minutes for a MuJoCo family on a 2-core CPU")
    collector = Path(omrl_envs.__file__).resolve().with_name("collect_sac.py")  # beside the registry
    if not collector.is_file():
        raise SystemExit(
            f"error: no dataset at {dataset_dir} and no {collector.name} to build it; build it with: {command}"
        )
    print(f"no dataset at {dataset_dir}: building it ({cost}) with: {command}", flush=True)
    completed = subprocess.run([sys.executable, str(collector), "--env-id", env_id, "--data-dir", data_dir])
    if completed.returncode != 0:
        raise SystemExit(f"error: building the dataset failed (exit {completed.returncode}); run: {command}")
    return dataset_dir


def load_offline_data(env_id: str, data_dir: str, normalize_states: bool, device: torch.device, obs_stats=None):
    """All 40 tasks' transitions as one tensor on the device; obs_stats (mean, std) given by a checkpoint, or computed
    from the train tasks when normalize_states (test data serve the offline protocol alone). The tasks are read one at
    a time into one preallocated array and normalised in place: the peak memory is about the dataset's own size
    (python benchmarks/bench_load.py)."""
    family = omrl_envs.get_family(env_id)
    obs_dim, act_dim = family.obs_dim, family.act_dim
    dataset_dir = ensure_dataset(env_id, data_dir)
    try:
        manifest = omrl_envs.read_manifest(dataset_dir, env_id)
        counts = [omrl_envs.read_task_length(dataset_dir, env_id, t) for t in range(omrl_envs.NUM_TASKS)]
    except omrl_envs.DatasetError as e:
        raise SystemExit(f"error: {e}") from None
    if manifest.get("complete") is False:
        raise SystemExit(
            f"error: {dataset_dir / omrl_envs.MANIFEST}: dataset is incomplete (collection was interrupted); "
            f"rebuild with: python collect_sac.py --env-id {env_id} --data-dir {data_dir}"
        )
    counts = np.array(counts, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    task_rows = [slice(offset, offset + count) for offset, count in zip(offsets, counts)]
    obs, next_obs = slice(0, obs_dim), slice(obs_dim + act_dim + 1, 2 * obs_dim + act_dim + 1)
    rows = np.empty((counts.sum(), 2 * obs_dim + act_dim + 2), dtype=np.float32)
    hasher = omrl_envs.DatasetHasher()  # the fingerprint, task by task
    for t in range(omrl_envs.NUM_TASKS):
        try:
            task = omrl_envs.read_task_data(dataset_dir, env_id, t)
        except omrl_envs.DatasetError as e:
            raise SystemExit(f"error: {e}") from None
        if len(task["rewards"]) != counts[t]:
            raise SystemExit(f"error: {omrl_envs.task_file(dataset_dir, t)}: the file changed while it was read")
        hasher.update(task)
        block = rows[task_rows[t]]
        block[:, obs] = task["observations"]
        block[:, obs_dim : obs_dim + act_dim] = task["actions"]
        block[:, obs_dim + act_dim] = task["rewards"]
        block[:, next_obs] = task["next_observations"]
        block[:, -1] = task["terminations"]  # truncations are time limits, not terminal states: bootstrap
        del task, block  # at most one task's arrays besides `rows`
    obs_mean, obs_std = np.zeros(obs_dim), np.ones(obs_dim)
    if obs_stats is not None:
        obs_mean, obs_std = obs_stats
    elif normalize_states:
        obs_mean, obs_std = state_statistics(rows[:, obs], [task_rows[t] for t in omrl_envs.TRAIN_TASKS])
    if obs_stats is not None or normalize_states:
        for part in task_rows:
            for columns in (obs, next_obs):
                normalised = rows[part, columns] - obs_mean  # in float64 (NumPy's promotion), stored as float32
                normalised /= obs_std
                rows[part, columns] = normalised
    context_dim = obs_dim + act_dim + 1 + (obs_dim if family.next_obs_in_context else 0)
    return OfflineData(
        rows=torch.from_numpy(rows).to(device),
        offsets=torch.from_numpy(offsets).to(device),
        counts=torch.from_numpy(counts).to(device),
        obs_mean=obs_mean,
        obs_std=obs_std,
        obs_dim=obs_dim,
        act_dim=act_dim,
        context_dim=context_dim,
        fingerprint=hasher.fingerprint(manifest),
    )


def state_statistics(states: np.ndarray, parts: list) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (+ 1e-3) in float64 of the rows `parts` of `states`, one part at a time and bit-identical to
    NumPy's mean(0) and std(0) of those rows concatenated: NumPy sums a C-order array over axis 0 row after row,
    from 0, which the running sums continue; std is the root of the mean squared deviation from the mean."""
    total, n = np.zeros(states.shape[1]), sum(part.stop - part.start for part in parts)
    for part in parts:
        total = np.add.reduce(np.concatenate([total[None], states[part]]), axis=0)
    mean, squares = total / n, np.zeros(states.shape[1])
    for part in parts:
        deviation = states[part] - mean
        deviation *= deviation
        squares = np.add.reduce(np.concatenate([squares[None], deviation]), axis=0)
    return mean, np.sqrt(squares / n) + 1e-3


def check_dataset(checkpoint: dict | None, data: OfflineData, checkpoint_file) -> None:
    """A checkpoint is re-evaluated or resumed only on the dataset it was trained on (one-line error otherwise)."""
    saved = None if checkpoint is None else checkpoint.get("dataset")
    if saved is not None and saved["content_hash"] != data.fingerprint["content_hash"]:
        raise SystemExit(
            f"error: {checkpoint_file} was trained on {omrl_envs.describe_fingerprint(saved)}, but --data-dir holds "
            f"{omrl_envs.describe_fingerprint(data.fingerprint)}: point --data-dir at the dataset the run used"
        )


def sample_rows(data: OfflineData, task_ids: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n i.i.d. rows of each task in task_ids: (len(task_ids), n, row width), one gather for the whole meta-batch."""
    draws = torch.randint(0, 2**62, (len(task_ids), n), generator=generator, device=task_ids.device)
    index = data.offsets[task_ids, None] + draws % data.counts[task_ids, None]
    return data.rows[index]


# ---- END SHARED BLOCK: data ----


# ------------------------------------------------------------------------------------------------
# Networks
# ------------------------------------------------------------------------------------------------
def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    layers, width = [], in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, out_dim))


class ContextEncoder(nn.Module):
    """e_phi: one transition -> tanh embedding; the task embedding z is the mean over the context (CSRO)."""

    def __init__(self, context_dim: int, hidden: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.net = mlp(context_dim, hidden, latent_dim)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(context))


class ClubNet(nn.Module):
    """q_psi(z | s, a): Gaussian with tanh on all outputs, mean = first half, var = softplus(second half) (CSRO)."""

    def __init__(self, obs_act_dim: int, hidden: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.net = mlp(obs_act_dim, hidden, 2 * latent_dim)

    def forward(self, obs_act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, pre_var = torch.tanh(self.net(obs_act)).chunk(2, dim=-1)
        return mean, F.softplus(pre_var)


class Actor(nn.Module):
    """Tanh-Gaussian pi(a | s, z) (SAC); forward() is the deterministic action tanh(mean) in [-1, 1]^A."""

    def __init__(self, obs_dim: int, latent_dim: int, hidden: tuple[int, ...], act_dim: int):
        super().__init__()
        self.net = mlp(obs_dim + latent_dim, hidden, 2 * act_dim)  # pre-tanh mean and log-std

    def forward(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(torch.cat([obs, z], -1)).chunk(2, -1)[0])

    def sample(self, obs: torch.Tensor, z: torch.Tensor, generator: torch.Generator):
        """a~ = tanh(mean + std eps) (reparameterised), log pi(a~ | s, z), pre-tanh mean and log-std; as CSRO's code,
        the log-std is clamped to [-20, 0] and the tanh correction is log(1 - a~^2 + 1e-6)."""
        mean, log_std = self.net(torch.cat([obs, z], -1)).chunk(2, -1)
        log_std = log_std.clamp(-20.0, 0.0)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        action = torch.tanh(mean + log_std.exp() * eps)
        log_pi = (-0.5 * eps.pow(2) - log_std - 0.5 * np.log(2 * np.pi) - torch.log(1 - action.pow(2) + 1e-6)).sum(-1)
        return action, log_pi, mean, log_std


class ValueNet(nn.Module):
    """V(s, z) of SAC with a V net, regressed onto min Q(s, a~, z) - log pi(a~ | s, z); its target copy bootstraps Q."""

    def __init__(self, obs_dim: int, latent_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = mlp(obs_dim + latent_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, z], -1)).squeeze(-1)


class TwinCritic(nn.Module):
    """Q1 and Q2 (s, a, z) as one network whose layers hold both members' weights: one batched matmul per layer."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], num_members: int = 2):
        super().__init__()
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for fan_in, fan_out in zip((in_dim, *hidden), (*hidden, 1), strict=True):
            bound = fan_in**-0.5  # nn.Linear's default initialisation, per member
            self.weights.append(nn.Parameter(torch.empty(num_members, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_members, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, obs: torch.Tensor, action: torch.Tensor, z: torch.Tensor, members: slice = slice(None)):
        """Q values of the chosen members: (members, batch)."""
        x = torch.cat([obs, action, z], -1)
        x = x.expand(self.weights[0][members].shape[0], *x.shape)
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(bias[members], x, weight[members])
            if i < len(self.weights) - 1:
                x = F.relu(x)
        return x.squeeze(-1)


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------
def focal_distance_metric_loss(z: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
    """FOCAL's distance-metric loss over unordered pairs of the meta-batch's task embeddings, as CSRO's code:
    same task sqrt(D + 1e-3), different tasks 1 / (D + 0.1), D = mean over dims of (z_i - z_j)^2."""
    sq_dist = (z[:, None, :] - z[None, :, :]).pow(2).mean(-1)
    upper = torch.ones_like(sq_dist, dtype=torch.bool).triu(1)
    same = (task_ids[:, None] == task_ids[None, :]) & upper
    different = ~(task_ids[:, None] == task_ids[None, :]) & upper
    attract = (torch.sqrt(sq_dist + 1e-3) * same).sum() / (same.sum() + 1e-3)
    repel = (1.0 / (sq_dist + 0.1) * different).sum() / (different.sum() + 1e-3)
    return attract + repel


def club_upper_bound(z: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """CLUB upper bound of I(z; (s, a)) per task (CSRO's form, no 1/2, log var cancels), in O(b):
    mean_{t,k,l,d} (z_tl - mu_tk)^2 / var_tk - mean_{t,k,d} (z_tk - mu_tk)^2 / var_tk, with z, mean, var (T, b, L);
    l runs over the same task's transitions, as CSRO's code. The double mean over (k, l) factorises per dimension:
    mean_l (z_l - mu)^2 = mean(z^2) - 2 mu mean(z) + mu^2."""
    z_mean, z_sq_mean = z.mean(1, keepdim=True), z.pow(2).mean(1, keepdim=True)
    all_pairs = ((z_sq_mean - 2 * mean * z_mean + mean.pow(2)) / var).mean()
    matched_pairs = ((z - mean).pow(2) / var).mean()
    return all_pairs - matched_pairs


def encoder_losses(context_encoder, club_net, context, obs_act, task_ids):
    """Task inference (algorithms.md §1): the task embeddings z (T, L) and the three encoder-side losses."""
    embeddings = context_encoder(context)  # (T, context_size, L), per transition
    z = embeddings.mean(1)
    mean, var = club_net(obs_act)
    # q_psi's Gaussian NLL sees detached embeddings; the CLUB bound sees detached q_psi outputs. (CSRO evaluates
    # q_psi again after its optimiser step for the bound; reusing this forward saves a pass, one Adam step apart.)
    club_model_loss = ((embeddings.detach() - mean).pow(2) / (2 * var) + 0.5 * var.log()).mean()
    club_loss = club_upper_bound(embeddings, mean.detach(), var.detach())
    focal_loss = focal_distance_metric_loss(z, task_ids)
    return z, focal_loss, club_loss, club_model_loss


def dual_kl_estimate(c_data: torch.Tensor, c_policy: torch.Tensor) -> torch.Tensor:
    """BRAC's dual-form estimate of KL(pi || behaviour) per state, from the dual critic c at the data action and at a
    policy sample: D = -softplus(c(s, a)) + log(softplus(c(s, a~)) + 1e-8) + 1."""
    return -F.softplus(c_data) + torch.log(F.softplus(c_policy) + 1e-8) + 1.0


def dual_critic_loss_fn(dual_critic, obs, action, policy_action, z, penalty_weight: float, penalty: str, generator):
    """c maximises D, with a penalty at actions a_int interpolated between the policy's and the data's: the reference
    code's (CSRO, from FOCAL's port of BRAC) on c's value, mean(max(|c(s, a_int)| - 1, 0)^2), or BRAC's gradient
    penalty mean(max(||dc/da (s, a_int)|| - 1, 0)^2)."""
    u = torch.rand(len(obs), 1, generator=generator, device=obs.device)
    interpolated = policy_action + u * (action - policy_action)
    if penalty == "value":
        excess = dual_critic(obs, interpolated, z)[0].abs() - 1.0
    else:
        interpolated.requires_grad_(True)
        (grad,) = torch.autograd.grad(dual_critic(obs, interpolated, z).sum(), interpolated, create_graph=True)
        excess = (grad.pow(2).sum(-1) + 1e-8).sqrt() - 1.0
    divergence = dual_kl_estimate(dual_critic(obs, action, z)[0], dual_critic(obs, policy_action, z)[0])
    return -divergence.mean() + penalty_weight * excess.clamp(min=0.0).pow(2).mean()


def critic_value_losses(critic, value_target, value_net, batch, z, policy_sample, reward_scale: float, gamma: float):
    """Twin-critic TD loss onto reward_scale r + gamma (1 - d) Vbar(s', z) (no target Q nets), V onto
    min Q(s, a~, z) - log pi(a~ | s, z) (CSRO's code reads Q after this step's critic update: one Adam step apart)."""
    obs, action, reward, next_obs, termination = batch
    with torch.no_grad():
        y = reward_scale * reward + gamma * (1.0 - termination) * value_target(next_obs, z)
        v_target = critic(obs, policy_sample[0], z).min(0).values - policy_sample[1]
    q = critic(obs, action, z)  # (2, N)
    v = value_net(obs, z)
    critic_loss = (q - y).pow(2).mean(1).sum()
    value_loss = (v - v_target).pow(2).mean()
    return critic_loss, value_loss, q[0].detach()


def brac_actor_loss(critic, dual_critic, batch, z, policy_sample, alpha: torch.Tensor, regularization: float):
    """mean(log pi(a~) - min Q(s, a~, z) + alpha D) + L2 on the pre-tanh mean and log-std (CSRO's code), with D
    differentiated through a~ (no dual critic: no BRAC, D = 0); the mean divergence is returned for alpha."""
    obs, action = batch[0], batch[1]
    policy_action, log_pi, mean, log_std = policy_sample
    min_q = critic(obs, policy_action, z).min(0).values
    divergence = torch.zeros_like(min_q)
    if dual_critic is not None:
        divergence = dual_kl_estimate(dual_critic(obs, action, z)[0], dual_critic(obs, policy_action, z)[0])
    actor_loss = (log_pi - min_q + alpha * divergence).mean() + regularization * (mean.pow(2) + log_std.pow(2)).mean()
    return actor_loss, divergence.detach().mean()


def mean_z(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """z = the mean embedding of a context's rows, from their sum and count (the meta-test's running sums); the prior
    z = 0 for an empty context."""
    return sums / counts.clamp(min=1)[:, None].float()


# ---- SHARED BLOCK: meta-test (identical in select.py and baselines/*.py; tests check) ----
# Algorithm-agnostic: `policy(obs, z)` gives deterministic actions, `z_inference` the task variable of each env's
# context (prior(n): the empty contexts; add(state, {env: new rows}): the contexts with those rows appended; z(state):
# z, the prior for an empty context; a Summed or a Reencoded below, or the method's own), `stochastic_policy(obs, z)`
# (optional) sampled actions, and `generator` (optional) the torch generator those three sample from, reseeded for
# each protocol. Every test task x run env steps in lockstep, one batched policy forward per step. Protocols
# (benchmark.md §3):
#   offline          before each scored episode, one horizon of the test task's offline transitions joins the context;
#   online-prior     scored episodes fill the context; z at the prior (a fresh prior sample for each episode) for the
#                    first PRIOR_EPISODES episodes;
#   online-random    per round: exploration of exactly one horizon of transitions (an episode that ends early is
#                    followed by another, the last one cut at the horizon: CSRO's max_samples = horizon), each step
#                    uniform random while spent + t < budget / 2 (spent: scored transitions so far, t: steps into the
#                    round), else the stochastic policy (pi + proximal noise for a deterministic policy); re-infer z
#                    from the exploration context; one scored episode (not added to the context);
#   online-proximal  as online-random, every exploration action pi(s, z) + clip(N(0, sigma_test), eps_min, eps_max)
#                    clipped to [-1, 1] (eq. 4).
# z is re-inferred after each exploration round, before the scored episode (algorithms.md §3: reinfer="round");
# CSRO's code re-infers after each scored episode, once k = PRIOR_EPISODES horizons are scored (reinfer="csro";
# docs/baselines.md: differences from the reference, with its measured effect).
# A recurrent belief (z_inference.per_step, e.g. BOReL's GRU: trained on beliefs that change with every transition)
# is given what its own evaluation gives it: z follows every environment step (exploration and scored episodes alike,
# a scored episode's steps leaving the context afterwards where the protocol says so), no prior episodes, and its own
# offline context (z_inference.offline_rows: whole consecutive episodes of the task's data, not i.i.d. rows).
DETERMINISTIC, RANDOM, PROXIMAL, STOCHASTIC = range(4)
REINFER = ("round", "csro")


def stacked(new: dict, width: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The envs with new rows in {env: rows} (some), their indices (m,), their rows zero-padded (m, max_len, width)
    and their row counts (m,): one batch for the encoder."""
    envs = [int(i) for i, rows in new.items() if len(rows)]
    rows, lengths = padded([[new[i]] for i in envs], width, device)
    return torch.as_tensor(envs, device=device), rows, lengths


class Summed:
    """A z that is a function of the sums of per-transition statistics over the context and of its row count:
    statistics(padded rows (m, L, width)) -> (m, L, dim), z = finish(sums (n, dim), counts (n,)); e.g. the mean
    encoders (the embeddings) and PEARL's product of Gaussians (precision-weighted means, precisions). Each row is
    encoded once, when it joins the context, and added to its env's running sum: the same z as encoding the whole
    context again at every inference, up to the order of the float additions."""

    def __init__(self, statistics, finish, dim: int, width: int, device):
        self.statistics, self.finish, self.dim, self.width, self.device = statistics, finish, dim, width, device

    def prior(self, n: int):
        return torch.zeros(n, self.dim, device=self.device), torch.zeros(n, dtype=torch.int64, device=self.device)

    def add(self, state, new: dict):
        sums, counts = state
        if not any(len(rows) for rows in new.values()):
            return state
        index, rows, lengths = stacked(new, self.width, self.device)
        with torch.inference_mode():
            mask = (torch.arange(rows.shape[1], device=self.device) < lengths[:, None]).float()
            sums, counts = sums.clone(), counts.clone()
            sums[index] += (self.statistics(rows) * mask[..., None]).sum(1)
            counts[index] += lengths
        return sums, counts

    def z(self, state):
        with torch.inference_mode():
            return self.finish(*state)


class Reencoded:
    """A z with no exact running form (e.g. CORRO's attention over the context): infer_z(padded context
    (n, max_len, width), counts (n,)) encodes each env's whole context again at every inference, a cost that grows
    with the square of the number of rounds."""

    def __init__(self, infer_z, width: int, device):
        self.infer_z, self.width, self.device = infer_z, width, device

    def prior(self, n: int):
        return [[] for _ in range(n)]

    def add(self, state, new: dict):
        new = {int(i): rows for i, rows in new.items()}
        return [[*rows, new[i]] if i in new else rows for i, rows in enumerate(state)]

    def z(self, state):
        with torch.inference_mode():
            return self.infer_z(*padded(state, self.width, self.device))


def rollout(
    envs, active, z, mode_at, policy, stochastic_policy, rng, data, noise, reset_seeds, device, steps=None, belief=None
):  # fmt: skip
    """Every active env in lockstep: one episode (steps=None) or exactly `steps` transitions, a new episode starting
    whenever one ends (an exploration round). mode_at(t) is each env's action mode at step t. belief: (z_inference,
    context) of a per-step belief, whose z then follows every transition from that context on. Returns the first
    episode's returns and lengths, the context rows of each env, and the belief's context after them (or None)."""
    n, act_dim = len(envs), data.act_dim
    obs = np.zeros((n, data.obs_dim))
    for i in np.flatnonzero(active):
        obs[i] = envs[i].reset(seed=None if reset_seeds is None else int(reset_seeds[i]))[0]
    returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
    running, first_episode = active.copy(), active.copy()
    rows = [[] for _ in range(n)]
    noise_std, noise_min, noise_max = noise
    t = 0
    while running.any():
        idx = np.flatnonzero(running)
        modes = mode_at(t)[idx]
        obs_norm = ((obs[idx] - data.obs_mean) / data.obs_std).astype(np.float32)
        obs_t, z_t = torch.as_tensor(obs_norm, device=device), z[torch.as_tensor(idx, device=device)]
        with torch.inference_mode():
            action = policy(obs_t, z_t).cpu().numpy().astype(np.float64)
            if stochastic_policy is not None and (modes == STOCHASTIC).any():
                sampled = stochastic_policy(obs_t, z_t).cpu().numpy().astype(np.float64)
            else:
                sampled = None
        uniform = rng.uniform(-1.0, 1.0, (len(idx), act_dim))  # drawn every step: noise streams do not depend on modes
        gaussian = rng.normal(0.0, 1.0, (len(idx), act_dim)) * noise_std
        proximal = np.clip(action + np.clip(gaussian, noise_min, noise_max), -1.0, 1.0)
        mode = modes[:, None]
        stochastic = proximal if sampled is None else sampled
        action = np.where(mode == RANDOM, uniform, action)
        action = np.where(mode == PROXIMAL, proximal, action)
        action = np.where(mode == STOCHASTIC, stochastic, action)
        for j, i in enumerate(idx):
            next_obs, reward, terminated, truncated, _ = envs[i].step(action[j])
            next_obs_norm = (next_obs - data.obs_mean) / data.obs_std
            rows[i].append(np.concatenate([obs_norm[j], action[j], [reward], next_obs_norm, [float(terminated)]]))
            returns[i] += reward * first_episode[i]
            lengths[i] += first_episode[i]
            obs[i] = next_obs
            if terminated or truncated:
                first_episode[i] = False
                running[i] = steps is not None and len(rows[i]) < steps
                if running[i]:
                    obs[i] = envs[i].reset()[0]  # the round goes on with a new episode
            elif steps is not None and len(rows[i]) >= steps:
                running[i] = False  # the round is full: its last episode is cut here
        if belief is not None:  # the belief after this step's transitions, for the next step
            stepped = torch.as_tensor(np.array([rows[i][-1] for i in idx], dtype=np.float32), device=device)
            belief = belief[0], belief[0].add(belief[1], {i: stepped[j : j + 1] for j, i in enumerate(idx)})
            z = belief[0].z(belief[1])
        t += 1
    rows = [torch.as_tensor(np.array(r, dtype=np.float32), device=device) for r in rows]
    return returns, lengths, rows, None if belief is None else belief[1]


def exploration_modes(protocol: str, spent: np.ndarray, t: int, budget: int) -> np.ndarray:
    """Action modes at step t of an exploration round, per run: online-random is uniform random while
    spent + t < budget / 2 (spent: the run's scored transitions so far), then the stochastic policy, a per-step switch
    as CSRO's code; online-proximal is pi + proximal noise throughout."""
    if protocol == "online-random":
        return np.where(spent + t < budget / 2, RANDOM, STOCHASTIC)
    return np.full(len(spent), PROXIMAL)


def padded(contexts: list, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-env lists of row tensors -> (n, max_len, width) zero-padded context and (n,) counts."""
    counts = [sum(len(r) for r in c) for c in contexts]
    context = torch.zeros(len(contexts), max(1, *counts), width, device=device)
    for i, c in enumerate(contexts):
        if counts[i]:
            context[i, : counts[i]] = torch.cat(c)
    return context, torch.tensor(counts, device=device)


def iid_rows(data, task: int, horizon: int, rng, device) -> torch.Tensor:
    """The offline protocol's context rows of one round: one horizon of the task's transitions, drawn i.i.d."""
    draws = rng.integers(0, int(data.counts[task]), size=horizon)
    return data.rows[int(data.offsets[task]) + torch.as_tensor(draws, device=device)]


def run_protocol(
    protocol, envs, tasks, policy, z_inference, stochastic_policy, data, env_id, eval_seed, noise, device, reinfer
):  # fmt: skip
    """Per env: the scored episodes' returns, the transitions of each exploration round; and the final z."""
    n, horizon = len(envs), omrl_envs.get_family(env_id).horizon
    budget, prior_episodes = SCORED_BUDGET.get(env_id, 600), PRIOR_EPISODES.get(env_id, 2)
    rng = np.random.default_rng([eval_seed, PROTOCOLS.index(protocol)])
    reset_seeds = rng.integers(0, 2**31 - 1, size=n)  # first reset of each env; later resets continue its RNG
    per_step = getattr(z_inference, "per_step", False)  # a recurrent belief: z follows every transition
    offline_rows = getattr(z_inference, "offline_rows", iid_rows)
    context = z_inference.prior(n)
    z = z_inference.z(context)  # the prior
    spent = np.zeros(n, dtype=np.int64)
    scored, explored = [[] for _ in range(n)], [[] for _ in range(n)]
    while (active := spent < budget).any():
        if protocol in ("online-random", "online-proximal"):
            mode_at = lambda t, spent=spent: exploration_modes(protocol, spent, t, budget)
            _, _, rows, explored_context = rollout(
                envs, active, z, mode_at, policy, stochastic_policy, rng, data, noise, reset_seeds, device, horizon,
                (z_inference, context) if per_step else None,
            )  # fmt: skip
            reset_seeds = None
            context = (
                explored_context if per_step else z_inference.add(context, {i: rows[i] for i in np.flatnonzero(active)})
            )
            for i in np.flatnonzero(active):
                explored[i].append(len(rows[i]))
        if protocol == "offline":
            new = {i: offline_rows(data, tasks[i], horizon, rng, device) for i in np.flatnonzero(active)}
            context = z_inference.add(context, new)
        exploring = protocol in ("online-random", "online-proximal")
        if protocol == "offline" or (exploring and reinfer == "round") or per_step:
            z = z_inference.z(context)
        deterministic = lambda t: np.full(n, DETERMINISTIC)
        returns, lengths, rows, scored_context = rollout(
            envs, active, z, deterministic, policy, None, rng, data, noise, reset_seeds, device, None,
            (z_inference, context) if per_step else None,
        )  # fmt: skip
        reset_seeds = None
        spent += np.where(active, lengths, 0)
        for i in np.flatnonzero(active):
            scored[i].append(float(returns[i]))
        if protocol == "online-prior" and per_step:  # the scored episodes are the context, z their belief
            context = scored_context
            z = z_inference.z(context)
        elif protocol == "online-prior":
            context = z_inference.add(context, {i: rows[i] for i in np.flatnonzero(active)})
            use_context = torch.as_tensor([len(s) >= prior_episodes for s in scored], device=device)[:, None]
            z = z_inference.z(context)
            if not use_context.all():  # a fresh prior sample for each prior episode (PEARL)
                z = torch.where(use_context, z, z_inference.z(z_inference.prior(n)))
        if exploring and reinfer == "csro" and not per_step:  # from the whole context, once k horizons are scored
            ready = torch.as_tensor(spent >= prior_episodes * horizon, device=device)[:, None]
            z = torch.where(ready, z_inference.z(context), z)
    return scored, explored, z


def evaluate(
    policy, z_inference, data, env_id, protocols, eval_runs, eval_seed, noise, device, stochastic_policy=None,
    generator=None, reinfer="round", keep_z=False,
):  # fmt: skip
    """Run the meta-test protocols on the test tasks: {protocol: return, per task, per round, context shift; with
    keep_z, each run's final z and each test task's offline z}."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-20 forwards: threads only add synchronisation; also fixes the summation order
    try:
        return _evaluate(
            policy, z_inference, data, env_id, protocols, eval_runs, eval_seed, noise, device, stochastic_policy,
            generator, reinfer, keep_z,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def reseed(generator, *key) -> None:
    """Seed the method's meta-test generator from [eval_seed, protocol]: each protocol's samples are its own, so
    `--eval-checkpoint --protocols X` reproduces X's logged number alone."""
    if generator is not None:
        generator.manual_seed(int(np.random.default_rng([*key, 1]).integers(2**62)))


def _evaluate(
    policy, z_inference, data, env_id, protocols, eval_runs, eval_seed, noise, device, stochastic_policy, generator,
    reinfer, keep_z,
):  # fmt: skip
    test_tasks = omrl_envs.TEST_TASKS
    tasks = [t for t in test_tasks for _ in range(eval_runs)]
    envs = [omrl_envs.make_env(env_id, t) for t in tasks]
    # Context-shift diagnostic: distance from the final context's z to the z of the task's offline data, divided by
    # the mean distance between different test tasks' offline z (0: no shift; about 1: as far as another task).
    reference_rng = np.random.default_rng([eval_seed, len(PROTOCOLS)])
    offline_rows = getattr(z_inference, "offline_rows", iid_rows)  # as the offline protocol draws its context
    reference = [offline_rows(data, t, CONTEXT_SHIFT_REFERENCE_SIZE, reference_rng, device) for t in test_tasks]
    reseed(generator, eval_seed, len(PROTOCOLS))
    z_offline = z_inference.z(z_inference.add(z_inference.prior(len(test_tasks)), dict(enumerate(reference))))
    with torch.inference_mode():
        task_spread = torch.cdist(z_offline, z_offline).sum() / (len(test_tasks) * (len(test_tasks) - 1))
    results = {}
    for protocol in protocols:
        reseed(generator, eval_seed, PROTOCOLS.index(protocol))
        scored, explored, z = run_protocol(
            protocol, envs, tasks, policy, z_inference, stochastic_policy, data, env_id, eval_seed, noise, device,
            reinfer,
        )  # fmt: skip
        final = np.array([s[-1] for s in scored])
        z_reference = z_offline[[test_tasks.index(t) for t in tasks]]
        shift = ((z - z_reference).norm(dim=-1) / task_spread).cpu().numpy()
        num_rounds = max(len(s) for s in scored)  # runs whose scored episodes end early have more rounds
        results[protocol] = {
            "return": float(final.mean()),
            "per_task": {str(t): float(final[np.array(tasks) == t].mean()) for t in test_tasks},
            "per_round": [float(np.mean([s[k] for s in scored if len(s) > k])) for k in range(num_rounds)],
            "per_round_runs": [sum(len(s) > k for s in scored) for k in range(num_rounds)],
            "per_run": [[float(r) for r in s] for s in scored],
            "exploration_transitions": explored,
            "context_shift": float(shift.mean()),
            "context_shift_per_task": {str(t): float(shift[np.array(tasks) == t].mean()) for t in test_tasks},
        }
        if keep_z:  # for analyses of task inference (e.g. which task's offline z a run's final z is nearest)
            results[protocol]["z_final"] = {"tasks": tasks, "z": z.cpu().tolist()}
            results[protocol]["z_offline"] = {"tasks": list(test_tasks), "z": z_offline.cpu().tolist()}
    for env in envs:
        env.close()
    return results


# ---- END SHARED BLOCK: meta-test ----


# ---- SHARED BLOCK: logging and run record (identical in select.py and baselines/*.py; tests check) ----
def log_evaluation(writer: SummaryWriter, results: dict, step: int) -> None:
    for protocol, result in results.items():
        writer.add_scalar(f"eval/{protocol}/return", result["return"], step)
        writer.add_scalar(f"eval/{protocol}/context_shift", result["context_shift"], step)
        runs = len(result["per_run"])  # rounds that every run reached: late rounds of a few runs would bias the curve
        for k, (value, count) in enumerate(zip(result["per_round"], result["per_round_runs"], strict=True), start=1):
            if count == runs:
                writer.add_scalar(f"eval/{protocol}/round_return/{k:02d}", value, step)
    if "online-proximal" in results:
        writer.add_scalar("eval/context_shift", results["online-proximal"]["context_shift"], step)


def print_evaluation(results: dict, step: int) -> None:
    summary = ", ".join(f"{p} {r['return']:.2f} (shift {r['context_shift']:.2f})" for p, r in results.items())
    print(f"step {step}: eval return {summary}", flush=True)


def save_atomically(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def check_finite(loss_sums: dict, first_step: int, last_step: int, checkpoint_path: Path) -> None:
    """Stop with a one-line message if a loss went NaN/Inf in steps (first_step, last_step]; the checkpoint on disk
    is the last one saved before (checkpoints are written only after this check passes)."""
    bad = [name for name, value in loss_sums.items() if not np.isfinite(value)]
    if bad:
        kept = f"last good checkpoint: {checkpoint_path}" if checkpoint_path.is_file() else "no checkpoint saved yet"
        raise SystemExit(
            f"error: non-finite {', '.join(bad)} between gradient steps {first_step} and {last_step}; stopped ({kept})"
        )


@functools.cache
def code_at_start() -> dict:
    """The code this process runs, read once when main starts (a file edited while a run trains is not its code)."""
    return omrl_envs.code_version(__file__, omrl_envs.__file__)


def history_before(path: Path, step: int) -> list[str]:
    """The lines of an eval_history.jsonl before `step`; a line cut short by a kill is dropped."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] < step:
                kept.append(line)
        except json.JSONDecodeError:
            pass
    return kept


def run_record(step: int, args, results: dict, data: OfflineData, device, wall_seconds: float | None = None) -> dict:
    """final_eval.json / --eval-output: the evaluation, the options, and what produced it (data, code, machine)."""
    return {
        "step": step,
        "args": asdict(args),
        "protocols": results,
        "dataset": data.fingerprint,
        "code": code_at_start(),
        "wall_seconds": None if wall_seconds is None else round(wall_seconds, 1),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "torch": torch.__version__,
    }


def restore_generator(generator: torch.Generator, state: torch.Tensor, seed: int, step: int) -> None:
    """The training RNG of a checkpoint; one saved on another device type (CUDA vs CPU states differ) cannot be
    mapped, so the stream is reseeded from (seed, step): the run goes on, not bit-identically."""
    if state.numel() == generator.get_state().numel():
        generator.set_state(state)
    else:
        generator.manual_seed(int(np.random.default_rng([seed, step]).integers(2**62)))
        print(f"note: the checkpoint's RNG state is from another device type; reseeded from seed {seed}, step {step}")


# ---- END SHARED BLOCK: logging and run record ----


if __name__ == "__main__":
    # ---- SHARED BLOCK: command line and checkpoint (identical in select.py and baselines/*.py; tests check) ----
    args = tyro.cli(Args)
    checkpoint, checkpoint_file = None, args.eval_checkpoint
    if args.resume:
        if args.run_name is None:
            raise SystemExit("error: --resume needs --run-name, the name of the run directory to continue")
        checkpoint_file = Path(args.runs_dir) / args.run_name / "checkpoint.pt"
        checkpoint_file = checkpoint_file if checkpoint_file.is_file() else None  # none saved yet: start over
    if checkpoint_file is not None:  # re-evaluate or resume: the checkpoint's args, overridden by the command line
        try:
            checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
            saved = Args(**checkpoint["args"])
        except Exception as e:  # unreadable file, or not one of ours
            raise SystemExit(f"error: {checkpoint_file}: not a readable checkpoint ({e.__class__.__name__})") from None
        saved.eval_checkpoint, saved.resume, saved.run_name = args.eval_checkpoint, args.resume, args.run_name
        args = tyro.cli(Args, default=saved)  # e.g. a sweep of --proximal-noise-std, or more --num-train-steps
    args = resolve_args(args)
    if args.track:  # W&B, an optional requirement: imported only to track a run, checked before the data load
        try:
            import wandb
        except ImportError:
            raise SystemExit("error: --track needs wandb: pip install -r requirements-extras.txt") from None
    code_at_start()  # the code version now: files may change while the run trains
    table_options = (*PRESETS[args.preset], *ENV_DEFAULTS)
    resolved = ", ".join(f"{name} {getattr(args, name)}" for name in table_options)
    print(f"{args.env_id}, preset {args.preset}: {resolved}", flush=True)  # the table's values, flags applied
    # ---- END SHARED BLOCK: command line and checkpoint ----
    noise = (args.proximal_noise_std, args.proximal_noise_min, args.proximal_noise_max)

    # ---- SHARED BLOCK: seeding and device (identical in select.py and baselines/*.py; tests check) ----
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    generator = torch.Generator(device=device).manual_seed(args.seed)  # meta-batches and target-policy noise
    # ---- END SHARED BLOCK: seeding and device ----

    obs_stats = None if checkpoint is None else (checkpoint["obs_mean"], checkpoint["obs_std"])
    data = load_offline_data(args.env_id, args.data_dir, args.normalize_states, device, obs_stats)
    check_dataset(checkpoint, data, checkpoint_file)
    obs_dim, act_dim, latent = data.obs_dim, data.act_dim, args.latent_dim
    context_encoder = ContextEncoder(data.context_dim, args.encoder_hidden, latent).to(device)
    club_net = ClubNet(obs_dim + act_dim, args.encoder_hidden, latent).to(device)
    actor = Actor(obs_dim, latent, args.rl_hidden, act_dim).to(device)
    critic = TwinCritic(obs_dim + act_dim + latent, args.rl_hidden).to(device)
    value_net = ValueNet(obs_dim, latent, args.rl_hidden).to(device)
    value_target = copy.deepcopy(value_net)
    dual_critic = TwinCritic(obs_dim + act_dim + latent, args.rl_hidden, num_members=1).to(device)  # BRAC's c(s, a, z)
    networks = {
        "context_encoder": context_encoder,
        "club_net": club_net,
        "actor": actor,
        "critic": critic,
        "value_net": value_net,
        "value_target": value_target,
        "dual_critic": dual_critic,
    }
    optimizers = {
        name: torch.optim.Adam(networks[name].parameters(), lr=args.learning_rate, fused=True)  # one kernel per step
        for name in ("context_encoder", "club_net", "actor", "critic", "value_net")
    }
    optimizers["dual_critic"] = torch.optim.Adam(dual_critic.parameters(), args.dual_critic_learning_rate, fused=True)
    brac = args.alpha_max > 0  # else plain offline SAC (CSRO on Point-Robot): no dual critic, no KL penalty
    brac_alpha = torch.tensor(float(args.alpha), device=device)  # adapted at every actor update, used clipped
    eval_generator = torch.Generator(device=device)  # the stochastic policy's samples in the meta-test

    def policy(obs, z):
        return actor(obs, z)

    def stochastic_policy(obs, z):  # online-random explores with it once half of the scored budget is spent
        return actor.sample(obs, z, eval_generator)[0]

    def embed(rows):  # the encoder reads a row's first context_dim columns
        return context_encoder(rows[..., : data.context_dim])

    z_inference = Summed(embed, mean_z, latent, data.rows.shape[1], device)

    def run_evaluation():
        return evaluate(
            policy, z_inference, data, args.env_id, args.protocols, args.eval_runs, args.eval_seed, noise, device,
            stochastic_policy, eval_generator,  # reseeded per protocol: the same samples at every evaluation
            reinfer=args.reinfer, keep_z=args.eval_checkpoint is not None,  # re-evaluations keep each run's z
        )  # fmt: skip

    if checkpoint is not None:
        for name, net in networks.items():
            net.load_state_dict(checkpoint["networks"][name])
    if args.eval_checkpoint is not None:
        results = run_evaluation()
        print_evaluation(results, checkpoint["step"])
        output = Path(args.eval_output or Path(args.eval_checkpoint).with_name("reeval.json"))
        omrl_envs.atomic_write_json(output, run_record(checkpoint["step"], args, results, data, device))
        print(f"wrote {output}")
        sys.exit(0)

    start_step, wall_before = 1, 0.0
    if checkpoint is not None:  # --resume: the optimisers and the training RNG continue where the checkpoint stopped
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(checkpoint["optimizers"][name])
        restore_generator(generator, checkpoint["generator"], args.seed, checkpoint["step"])
        wall_before = checkpoint.get("wall_seconds", 0.0)  # training time before the resume
        brac_alpha.fill_(float(checkpoint["brac_alpha"]))
        start_step = checkpoint["step"] + 1

    # ---- SHARED BLOCK: run directory (identical in select.py and baselines/*.py; tests check) ----
    run_name = args.run_name or f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = Path(args.runs_dir) / run_name
    if start_step == 1 and (run_dir / "checkpoint.pt").is_file():
        raise SystemExit(f"error: {run_dir} holds a run: continue it with --resume or pick another --run-name")
    if start_step > args.num_train_steps:
        raise SystemExit(f"error: {run_dir} has done its {start_step - 1} steps; raise --num-train-steps to go on")
    run_dir.mkdir(parents=True, exist_ok=True)
    history = run_dir / "eval_history.jsonl"
    if history.is_file():  # keep the evaluations before start_step (none when starting over)
        history.write_text("".join(f"{line}\n" for line in history_before(history, start_step)))
    if args.track:  # as CleanRL's: before the writer is created, whose scalars W&B then mirrors (sync_tensorboard)
        wandb.init(
            project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=asdict(args),
            name=run_name, save_code=True,
        )  # fmt: skip
    writer = SummaryWriter(str(run_dir), purge_step=start_step)  # TensorBoard hides older events from start_step on
    writer.add_text(
        "hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
    )
    omrl_envs.atomic_write_json(run_dir / "args.json", asdict(args))
    checkpoint_path = run_dir / "checkpoint.pt"
    print(f"run {run_dir} on {device}", flush=True)
    # ---- END SHARED BLOCK: run directory ----

    train_tasks = torch.tensor(omrl_envs.TRAIN_TASKS, device=device)
    obs_act = slice(0, obs_dim + act_dim)
    loss_names = ("critic_loss", "value_loss", "focal_loss", "club_loss", "club_model_loss", "actor_loss")
    loss_names += ("dual_critic_loss",) * brac
    chart_names = ("divergence", "brac_alpha", "log_pi", "q1_mean", "z_norm")
    loss_sums = {k: torch.zeros((), device=device) for k in loss_names + chart_names}
    sums_since, actor_steps_since, logged_step = 0, 0, start_step - 1
    start_time = logged_time = time.time()

    def save_checkpoint(step: int) -> None:
        broken = [name for name, net in networks.items() if not all(p.isfinite().all() for p in net.parameters())]
        check_finite({f"{name} parameters": float("nan") for name in broken}, logged_step, step, checkpoint_path)
        save_atomically(
            {
                "step": step,
                "args": asdict(args),
                "networks": {name: net.state_dict() for name, net in networks.items()},
                "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
                "obs_mean": data.obs_mean,
                "obs_std": data.obs_std,
                "generator": generator.get_state(),
                "dataset": data.fingerprint,
                "wall_seconds": wall_before + time.time() - start_time,
                "brac_alpha": brac_alpha,
            },
            checkpoint_path,
        )

    def flush_losses(step: int) -> None:
        """The one host synchronisation of the loop: mean losses since the last flush, to TensorBoard."""
        global sums_since, actor_steps_since, logged_step, logged_time
        values = dict(zip(loss_sums, torch.stack(list(loss_sums.values())).tolist(), strict=True))
        check_finite(values, logged_step, step, checkpoint_path)
        for name in loss_sums:
            count = actor_steps_since if name in ("actor_loss", "divergence", "brac_alpha") else sums_since
            if count:
                group = "losses" if name in loss_names else "charts"
                writer.add_scalar(f"{group}/{name}", values[name] / count, step)
            loss_sums[name].zero_()
        now = time.time()
        writer.add_scalar("charts/SPS", (step - start_step + 1) / (now - start_time), step)
        interval_sps = (step - logged_step) / (now - logged_time)
        print(
            f"step {step}: {interval_sps:.2f} steps/s, critic_loss {values['critic_loss'] / sums_since:.4g}", flush=True
        )
        sums_since, actor_steps_since, logged_step, logged_time = 0, 0, step, time.time()

    for step in range(start_step, args.num_train_steps + 1):
        # ---- task inference (algorithms.md §1): encoder trained by FOCAL + CLUB only ----
        task_ids = train_tasks[
            torch.randperm(len(train_tasks), generator=generator, device=device)[: args.meta_batch_size]
        ]
        context_rows = sample_rows(data, task_ids, args.context_size, generator)
        z, focal_loss, club_loss, club_model_loss = encoder_losses(
            context_encoder, club_net, context_rows[..., : data.context_dim], context_rows[..., obs_act], task_ids
        )
        encoder_loss = args.focal_weight * focal_loss + args.club_weight * club_loss
        optimizers["context_encoder"].zero_grad(set_to_none=True)
        optimizers["club_net"].zero_grad(set_to_none=True)
        (encoder_loss + args.club_model_weight * club_model_loss).backward()  # disjoint parameters: one backward
        optimizers["context_encoder"].step()
        optimizers["club_net"].step()

        # ---- BRAC on SAC (algorithms.md §4): RL losses see z.detach() ----
        rows = sample_rows(data, task_ids, args.batch_size, generator).flatten(0, 1)
        batch = (
            rows[:, :obs_dim],
            rows[:, obs_dim : obs_dim + act_dim],
            rows[:, obs_dim + act_dim],
            rows[:, obs_dim + act_dim + 1 : 2 * obs_dim + act_dim + 1],
            rows[:, -1],
        )
        z_rl = z.detach().repeat_interleave(args.batch_size, dim=0)
        for _ in range(args.dual_critic_steps if brac else 0):  # fresh batches (CSRO's first reuses the step's batch)
            c_rows = sample_rows(data, task_ids, args.batch_size, generator).flatten(0, 1)
            c_obs, c_action = c_rows[:, :obs_dim], c_rows[:, obs_dim : obs_dim + act_dim]
            with torch.no_grad():
                c_policy_action = actor.sample(c_obs, z_rl, generator)[0]
            dual_critic_loss = dual_critic_loss_fn(
                dual_critic,
                c_obs,
                c_action,
                c_policy_action,
                z_rl,
                args.gradient_penalty_weight,
                args.gradient_penalty,
                generator,
            )
            optimizers["dual_critic"].zero_grad(set_to_none=True)
            dual_critic_loss.backward()
            optimizers["dual_critic"].step()
            loss_sums["dual_critic_loss"] += dual_critic_loss.detach() / args.dual_critic_steps
        policy_sample = actor.sample(batch[0], z_rl, generator)  # a~, log pi(a~), pre-tanh mean and log-std
        critic_loss, value_loss, q1_data = critic_value_losses(
            critic, value_target, value_net, batch, z_rl, policy_sample, args.reward_scale, args.gamma
        )
        optimizers["critic"].zero_grad(set_to_none=True)
        optimizers["value_net"].zero_grad(set_to_none=True)
        (critic_loss + value_loss).backward()
        optimizers["critic"].step()
        optimizers["value_net"].step()

        if step % args.policy_delay == 0:
            critic.requires_grad_(False)  # the actor loss needs dQ/da only
            dual_critic.requires_grad_(False)  # and dD/da
            alpha = brac_alpha.clamp(0.0, args.alpha_max)
            actor_loss, divergence = brac_actor_loss(
                critic, dual_critic if brac else None, batch, z_rl, policy_sample, alpha, args.policy_regularization
            )
            optimizers["actor"].zero_grad(set_to_none=True)
            actor_loss.backward()
            optimizers["actor"].step()
            critic.requires_grad_(True)
            dual_critic.requires_grad_(True)
            brac_alpha += divergence - args.target_divergence  # CSRO: an SGD step (lr 1) on -alpha (mean D - target)
            with torch.no_grad():
                torch._foreach_lerp_(list(value_target.parameters()), list(value_net.parameters()), args.tau)
            loss_sums["actor_loss"] += actor_loss.detach()
            loss_sums["divergence"] += divergence
            loss_sums["brac_alpha"] += alpha
            actor_steps_since += 1

        for name, value in (
            ("critic_loss", critic_loss),
            ("value_loss", value_loss),
            ("focal_loss", focal_loss),
            ("club_loss", club_loss),
            ("club_model_loss", club_model_loss),
            ("log_pi", policy_sample[1].mean()),
            ("q1_mean", q1_data.mean()),
            ("z_norm", z.detach().norm(dim=-1).mean()),
        ):
            loss_sums[name] += value.detach()
        sums_since += 1

        if step % args.log_every == 0:
            flush_losses(step)
        if step % args.eval_every == 0 or step == args.num_train_steps:
            if sums_since:
                flush_losses(step)
            eval_start = time.time()
            results = run_evaluation()
            writer.add_scalar("charts/eval_seconds", time.time() - eval_start, step)
            log_evaluation(writer, results, step)
            print_evaluation(results, step)
            with open(run_dir / "eval_history.jsonl", "a") as f:  # before the checkpoint: a resume never loses it
                f.write(json.dumps({"step": step, "protocols": results}) + "\n")
            save_checkpoint(step)

    # ---- SHARED BLOCK: final record (identical in select.py and baselines/*.py; tests check) ----
    wall_seconds = wall_before + time.time() - start_time
    record = run_record(args.num_train_steps, args, results, data, device, wall_seconds)
    omrl_envs.atomic_write_json(run_dir / "final_eval.json", record)
    writer.close()
    if args.track:  # the final evaluation in the W&B run's summary, beside the last logged scalars
        for protocol, result in results.items():
            wandb.run.summary[f"final_eval/{protocol}/return"] = result["return"]
            wandb.run.summary[f"final_eval/{protocol}/context_shift"] = result["context_shift"]
        wandb.finish()
    print(f"done in {time.time() - start_time:.0f} s; run record in {run_dir}", flush=True)
    headline = f"{results[HEADLINE_PROTOCOL]['return']:.2f}" if HEADLINE_PROTOCOL in results else "not run"
    print(f"headline protocol (the method's own paper): {HEADLINE_PROTOCOL}, return {headline}", flush=True)
    # ---- END SHARED BLOCK: final record ----
