"""Training speed and peak memory of select.py (or a baseline, --script): gradient steps per second and peak RSS.

Each configuration runs the script itself in a fresh subprocess (so RSS is that configuration's alone) on a
Point-Robot-shaped dataset at CSRO's scale (40 tasks x 14,000 transitions): the real one when
data/point-robot/ holds a complete dataset, else a synthetic one written to a temporary directory. Steps/s is the
median over the logging intervals after the first (warm-up); peak RSS is the child's ru_maxrss (data loading and
one short evaluation included).

    python benchmarks/bench_select.py                       # CSRO sizes (--preset reference) and the default, cpu
    python benchmarks/bench_select.py --configs csro --steps 60 --threads 2
    python benchmarks/bench_select.py --script baselines/csro.py --configs csro --steps 40
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # appended: the standard library's `select` stays first
import omrl_envs  # noqa: E402

CONFIGS = {
    # CSRO's Point-Robot sizes (algorithms.md §1-2), the scripts' reference preset: meta-batch 16 x 256, context 1024,
    # 200x3 encoder, 256x3 RL nets, the script's latent size (20; OffPEARL 5)
    "csro": ["--preset", "reference"],
    "preset": [],  # the script's default preset, cpu: on Point-Robot context 128, batch 64, 128x3 RL nets
}


def synthetic_dataset(data_dir: Path, transitions_per_task: int = 14_000) -> None:
    """Uniform random Point-Robot transitions (speed does not depend on the values)."""
    rng = np.random.default_rng(0)
    dataset_dir = data_dir / "point-robot"
    episodes = transitions_per_task // 20
    for task in range(omrl_envs.NUM_TASKS):
        obs = rng.uniform(-1, 1, (transitions_per_task, 2)).astype(np.float32)
        actions = rng.uniform(-1, 1, (transitions_per_task, 2)).astype(np.float32)
        data = {
            "observations": obs,
            "actions": actions,
            "rewards": -rng.uniform(0, 2, transitions_per_task).astype(np.float32),
            "next_observations": obs + 0.1 * actions,
            "terminations": np.zeros(transitions_per_task, np.float32),
            "truncations": np.tile(np.eye(20, dtype=np.float32)[-1], episodes),
            "checkpoint": np.repeat(np.arange(episodes) // 50, 20).astype(np.int64),
            "episode": np.repeat(np.arange(episodes), 20).astype(np.int64),
        }
        omrl_envs.write_task_data(dataset_dir, "point-robot", task, data)
    omrl_envs.write_manifest(dataset_dir, omrl_envs.make_manifest("point-robot", complete=True, synthetic=True))


def run_config(script: str, name: str, data_dir: Path, runs_dir: Path, steps: int, log_every: int, threads: int):
    command = [
        sys.executable, str(ROOT / script), "--data-dir", str(data_dir), "--runs-dir", str(runs_dir),
        "--run-name", f"bench_{name}", "--num-train-steps", str(steps), "--eval-every", str(steps),
        "--log-every", str(log_every), "--protocols", "offline", "--eval-runs", "1", *CONFIGS[name],
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: {script} failed:\n{proc.stderr[-2000:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # this worker's only child: the script
    rates = [float(m) for m in re.findall(r"step \d+: ([\d.]+) steps/s", proc.stdout)]
    return {
        "config": name,
        "steps_per_s": statistics.median(rates[1:]),
        "intervals": rates,
        "peak_rss_gb": peak_kb / 2**20,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", default="select.py", help="the training script, relative to the repository root")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=0, help="gradient steps per config (default: csro 50, preset 600)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="OMP_NUM_THREADS of the runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # one configuration in its own process, so that ru_maxrss of RUSAGE_CHILDREN is its alone
        script, name, data_dir, runs_dir, steps, log_every, threads = json.loads(args.worker)
        print(json.dumps(run_config(script, name, Path(data_dir), Path(runs_dir), steps, log_every, threads)))
        return
    real = ROOT / "data" / "point-robot" / omrl_envs.MANIFEST
    with tempfile.TemporaryDirectory() as tmp:
        if real.is_file() and json.loads(real.read_text()).get("complete"):
            data_dir, source = ROOT / "data", "data/point-robot (collect_sac.py)"
        else:
            data_dir, source = Path(tmp) / "data", "synthetic, 40 tasks x 14,000 transitions"
            synthetic_dataset(data_dir)
        print(f"{args.script}; dataset: {source}; threads: {args.threads}; load average: {os.getloadavg()[0]:.2f}")
        for name in args.configs:
            steps = args.steps or {"csro": 50, "preset": 600}[name]
            log_every = max(1, steps // 10)
            start = time.time()
            runs_dir = str(Path(tmp) / "runs")
            worker = json.dumps([args.script, name, str(data_dir), runs_dir, steps, log_every, args.threads])
            proc = subprocess.run([sys.executable, __file__, "--worker", worker], capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-2000:])
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            intervals = len(result["intervals"]) - 1
            print(
                f"{name:7s} {result['steps_per_s']:7.2f} steps/s (median of {intervals} x {log_every} steps), "
                f"peak RSS {result['peak_rss_gb']:.2f} GB, wall {time.time() - start:.0f} s, "
                f"load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
