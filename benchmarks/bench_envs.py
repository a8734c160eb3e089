"""Env steps per second for each task family: one env, uniform random actions (drawn beforehand with NumPy,
so the action sampler's own cost is excluded), resets on termination or truncation included.

    python benchmarks/bench_envs.py [--steps 20000] [--repeats 3]

Prints the median and the range over repeats. The machine is shared and noisy: compare within one run.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))
import omrl_envs  # noqa: E402


def steps_per_second(env_id: str, steps: int, seed: int) -> float:
    env = omrl_envs.make_env(env_id, omrl_envs.TEST_TASKS[0])
    actions = np.random.default_rng(seed).uniform(-1, 1, (steps, omrl_envs.FAMILIES[env_id].act_dim))
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--env-ids", nargs="*", default=list(omrl_envs.ENV_IDS))
    args = parser.parse_args()
    print(f"{'env id':<20} {'steps/s (median)':>17} {'range':>20}")
    for env_id in args.env_ids:
        rates = [steps_per_second(env_id, args.steps, seed) for seed in range(args.repeats)]
        print(f"{env_id:<20} {statistics.median(rates):>17,.0f} {min(rates):>9,.0f} - {max(rates):<9,.0f}", flush=True)
