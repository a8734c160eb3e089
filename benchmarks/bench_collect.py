"""Batched SAC training of N task learners (collect_sac.py's networks with a leading task dimension) against N
sequential single-task learners of the same size, for the same number of updates per task; and the same for acting
(one batched policy forward for N tasks' envs against N batch-1 forwards).

    python benchmarks/bench_collect.py [--num-tasks 40] [--env-id point-robot] [--preset cpu] [--updates 30]

Sizes (hidden width, batch) are the preset's. Prints task-updates/s of each, the ratio, medians and ranges over
repeats, the torch thread count and the load average: the machine is shared and noisy, compare within one run.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))
import collect_sac  # noqa: E402
import omrl_envs  # noqa: E402


def filled_buffers(num_tasks, obs_dim, act_dim, size, seed):
    """Replay buffers holding `size` random transitions per task (the update's cost does not depend on the data)."""
    rng = np.random.default_rng(seed)
    buffers = collect_sac.ReplayBuffers(num_tasks, size, obs_dim, act_dim, torch.device("cpu"))
    for value in buffers.data.values():
        value.copy_(torch.as_tensor(rng.normal(size=value.shape), dtype=torch.float32))
    buffers.data["actions"].clamp_(-1, 1)
    buffers.data["not_dones"].fill_(1.0)
    buffers.num_added = size
    return buffers


def time_updates(pairs, batch_size, updates, generator):
    """Seconds for `updates` updates of every (learner, buffers) pair, one pair after the other."""
    for learner, buffers in pairs:  # warm-up: allocator, Adam state
        learner.update(buffers.sample(batch_size, generator), generator)
    start = time.perf_counter()
    for learner, buffers in pairs:
        for _ in range(updates):
            learner.update(buffers.sample(batch_size, generator), generator)
    return time.perf_counter() - start


def time_acting(learners, obs, steps, generator):
    """Seconds for `steps` policy forwards of every learner on its tasks' observations."""
    start = time.perf_counter()
    for _ in range(steps):
        for learner, task_obs in zip(learners, obs):
            learner.act(task_obs, generator)
    return time.perf_counter() - start


def summary(values, digits=0):
    return f"{statistics.median(values):>10,.{digits}f} ({min(values):,.{digits}f} - {max(values):,.{digits}f})"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-tasks", type=int, default=omrl_envs.NUM_TASKS)
    parser.add_argument("--env-id", default="point-robot", choices=omrl_envs.ENV_IDS)
    parser.add_argument("--preset", default="cpu", choices=["cpu", "reference"])
    parser.add_argument("--updates", type=int, default=30, help="updates per task learner and repeat")
    parser.add_argument("--act-steps", type=int, default=200, help="policy forwards per task and repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    preset = collect_sac.PRESETS[args.env_id, args.preset]
    family = omrl_envs.get_family(args.env_id)
    n, device = args.num_tasks, torch.device("cpu")
    size = min(preset.total_steps, 5_000)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    make = lambda tasks: collect_sac.BatchedSAC(  # noqa: E731
        tasks, family.obs_dim, family.act_dim, preset.hidden_dim, preset.learning_rate, device
    )
    batched = [(make(n), filled_buffers(n, family.obs_dim, family.act_dim, size, 0))]
    sequential = [(make(1), filled_buffers(1, family.obs_dim, family.act_dim, size, i)) for i in range(n)]
    obs = np.random.default_rng(0).normal(size=(n, 1, family.obs_dim)).astype(np.float32)

    print(
        f"{args.env_id}, preset {args.preset}: {n} task learners, 2x{preset.hidden_dim} networks, batch "
        f"{preset.batch_size}; torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}"
    )
    rates = {"batched": [], "sequential": [], "batched act": [], "sequential act": []}
    for _ in range(args.repeats):
        rates["batched"].append(n * args.updates / time_updates(batched, preset.batch_size, args.updates, generator))
        seconds = time_updates(sequential, preset.batch_size, args.updates, generator)
        rates["sequential"].append(n * args.updates / seconds)
        rates["batched act"].append(n * args.act_steps / time_acting([batched[0][0]], [obs], args.act_steps, generator))
        singles = [learner for learner, _ in sequential]
        seconds = time_acting(singles, [obs[i : i + 1] for i in range(n)], args.act_steps, generator)
        rates["sequential act"].append(n * args.act_steps / seconds)
    ratio = [b / s for b, s in zip(rates["batched"], rates["sequential"])]
    act_ratio = [b / s for b, s in zip(rates["batched act"], rates["sequential act"])]
    print(f"{'':<34} {'median':>10} {'(range)':<20}")
    print(f"{'training, task-updates/s: batched':<34} {summary(rates['batched'])}")
    print(f"{'          sequential single-task':<34} {summary(rates['sequential'])}")
    print(f"{'          ratio batched/sequential':<34} {summary(ratio, 2)}")
    print(f"{'acting, task-steps/s: batched':<34} {summary(rates['batched act'])}")
    print(f"{'        sequential batch-1':<34} {summary(rates['sequential act'])}")
    print(f"{'        ratio batched/sequential':<34} {summary(act_ratio, 2)}")
