"""Training speed, peak memory and achieved GFLOP/s of select.py and the baselines, per family and preset.

Each configuration (family x script x preset) runs the script itself in a fresh subprocess, so that its RSS is its
own, on the family's dataset: the real one when data/<env-id>/ holds a complete dataset, else a synthetic one of the
cpu dataset's shape (random values: the speed does not depend on them) written to a temporary directory.
- steps/s: the median over the logging intervals after the first (warm-up); peak RSS: the child's ru_maxrss (data
  loading and one short offline evaluation included).
- --load: a second copy of the same run trains beside the measured one (the study's operating point: two
  single-thread jobs on a 2-core machine); --threads: the measured run's OMP_NUM_THREADS.
- --flops: the FLOPs of one gradient step, counted by torch.utils.flop_counter.FlopCounterMode (matmuls: mm, addmm,
  bmm, baddbmm, in the forward and backward passes) as the difference between a run of 2n and one of n steps, each
  counted up to its last optimizer step (the loading cancels, the evaluation is left out); then every matmul shape
  those steps ran is timed alone, with the same strides and threads, in the same conditions (the load job still
  running), giving this machine's matmul GFLOP/s at the step's own sizes. achieved / matmul is the share of the
  step's time that its matmuls would need alone.
- baselines/corro.py and baselines/borel.py train in phases (CORRO: CVAE, InfoNCE, RL; BOReL: VAE, RL): each phase
  is a row of its own, timed by a run that does that phase only (PHASES).
- --profile: the top operators (self CPU time) of a torch.profiler trace of --steps steps, for the first
  configuration.

    python benchmarks/bench_select.py                                   # select.py, Point-Robot, cpu and reference
    python benchmarks/bench_select.py --scripts select.py baselines/csro.py --env-ids cheetah-vel --presets cpu \\
        --threads 1 --load --flops                                      # the study's operating point
    python benchmarks/bench_select.py --env-ids cheetah-vel --presets cpu --threads 1 --profile --steps 200
"""

import argparse
import json
import os
import re
import resource
import runpy
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

DEFAULT_STEPS = {"reference": 50, "cpu": 600}
SYNTHETIC_TRANSITIONS = {"point-robot": 14_000}  # the others: the cpu dataset's 8 checkpoints x 10 episodes x 200
MATMULS = ("aten.mm.default", "aten.addmm.default", "aten.bmm.default", "aten.baddbmm.default")
# Scripts that train in phases (pre-training, then RL): each phase is timed alone, by a run of --steps steps that
# skips the other phases (their networks then stay untrained: a step's cost does not depend on their values).
# phase -> the script's flags, given the run's steps.
PHASES = {
    "baselines/corro.py": {
        "cvae": lambda n: ["--generative-steps", str(n), "--encoder-steps", "0"],
        "infonce": lambda n: ["--generative-steps", "0", "--encoder-steps", str(n)],
        "rl": lambda n: ["--generative-steps", "0", "--encoder-steps", "0"],
    },
    "baselines/borel.py": {"vae": lambda n: ["--vae-steps", str(n)], "rl": lambda n: ["--vae-steps", "0"]},
}


def synthetic_dataset(data_dir: Path, env_id: str) -> None:
    """Uniform random transitions of the family's shape, episodes of its horizon."""
    family = omrl_envs.get_family(env_id)
    rng = np.random.default_rng(0)
    n = SYNTHETIC_TRANSITIONS.get(env_id, 16_000)
    episodes = n // family.horizon
    for task in range(omrl_envs.NUM_TASKS):
        obs = rng.uniform(-1, 1, (n, family.obs_dim)).astype(np.float32)
        actions = rng.uniform(-1, 1, (n, family.act_dim)).astype(np.float32)
        data = {
            "observations": obs,
            "actions": actions,
            "rewards": -rng.uniform(0, 2, n).astype(np.float32),
            "next_observations": obs + 0.1 * rng.uniform(-1, 1, obs.shape).astype(np.float32),
            "terminations": np.zeros(n, np.float32),
            "truncations": np.tile(np.eye(family.horizon, dtype=np.float32)[-1], episodes),
            "checkpoint": np.repeat(np.arange(episodes) // 50, family.horizon).astype(np.int64),
            "episode": np.repeat(np.arange(episodes), family.horizon).astype(np.int64),
        }
        omrl_envs.write_task_data(data_dir / env_id, env_id, task, data)
    manifest = omrl_envs.make_manifest(env_id, complete=True, synthetic=True)
    omrl_envs.write_manifest(data_dir / env_id, manifest)


def dataset_dir_for(env_id: str, tmp: Path) -> tuple[Path, str]:
    real = ROOT / "data" / env_id / omrl_envs.MANIFEST
    if real.is_file() and json.loads(real.read_text()).get("complete"):
        return ROOT / "data", f"data/{env_id} (collect_sac.py)"
    if not (tmp / "data" / env_id / omrl_envs.MANIFEST).is_file():
        synthetic_dataset(tmp / "data", env_id)
    return tmp / "data", f"synthetic, {SYNTHETIC_TRANSITIONS.get(env_id, 16_000)} transitions per task"


def script_args(cfg: dict, run_name: str, steps: int, log_every: int) -> list[str]:
    return [
        "--env-id", cfg["env_id"], "--preset", cfg["preset"], "--data-dir", cfg["data_dir"],
        "--runs-dir", cfg["runs_dir"], "--run-name", run_name, "--num-train-steps", str(steps),
        "--eval-every", str(steps), "--log-every", str(log_every), "--protocols", "offline", "--eval-runs", "1",
        *PHASES.get(cfg["script"], {}).get(cfg.get("phase"), lambda n: [])(steps),
    ]  # fmt: skip


def run_in_process(script: str) -> None:
    """Run a training script in this process (sys.argv set by the caller); a pre-training phase alone ends with
    sys.exit(0), without an evaluation."""
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise


# ---- counting FLOPs and timing the step's matmuls (a child process: --count) ----
def count_step(cfg: dict, steps: int) -> dict:
    """FLOPs of loading + `steps` training steps and the matmul shapes they ran: the counts as they stand at the
    run's last optimizer step, so that the evaluation after it is left out (on a terminating family its episodes
    end where the policy falls, a different number of steps for each run length). The run is stopped at its first
    operation in inference mode after training began: the evaluation (the meta-test runs in inference mode)."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class EvaluationStarts(Exception):
        pass

    class MatmulShapes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if at_last_step and torch.is_inference_mode_enabled():
                raise EvaluationStarts
            if str(func) in MATMULS:
                key = (str(func), tuple((tuple(a.shape), tuple(a.stride())) for a in args if torch.is_tensor(a)))
                self.calls[key] = self.calls.get(key, 0) + 1
            return func(*args, **(kwargs or {}))

    sys.argv = [cfg["script"], *script_args(cfg, f"count_{steps}", steps, steps)]
    at_last_step = {}
    shapes = MatmulShapes()
    with FlopCounterMode(display=False) as flops, shapes:
        hook = register_optimizer_step_post_hook(
            lambda *_: at_last_step.update(flops=flops.get_total_flops(), calls=dict(shapes.calls))
        )
        try:
            run_in_process(cfg["script"])
        except EvaluationStarts:
            pass
        finally:
            hook.remove()
    return at_last_step


def time_matmul(op: str, operands, threads: int) -> float:
    """Seconds per call of one matmul at these (shape, stride) operands, random values."""
    import torch

    torch.set_num_threads(threads)
    storage = [1 + sum((n - 1) * st for n, st in zip(shape, stride, strict=True)) for shape, stride in operands]
    tensors = [torch.randn(k).as_strided(shape, stride) for k, (shape, stride) in zip(storage, operands, strict=True)]
    func = {"aten.mm.default": torch.mm, "aten.bmm.default": torch.bmm}.get(op)
    call = (lambda: func(*tensors)) if func else (lambda: getattr(torch, op.split(".")[1])(*tensors))
    for _ in range(3):
        call()
    repeats, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.05 or repeats < 5:
        call()
        repeats += 1
    return (time.perf_counter() - start) / repeats


def count_worker(cfg: dict, n: int, threads: int) -> dict:
    one, two = count_step(cfg, n), count_step(cfg, 2 * n)
    calls = {key: (two["calls"].get(key, 0) - one["calls"].get(key, 0)) / n for key in two["calls"]}
    matmul_seconds = sum(c * time_matmul(op, operands, threads) for (op, operands), c in calls.items() if c > 0)
    flops_per_step = (two["flops"] - one["flops"]) / n
    return {"gflop_per_step": flops_per_step / 1e9, "matmul_gflops": flops_per_step / matmul_seconds / 1e9}


# ---- one timed run (a child process: --worker) ----
def timed_run(cfg: dict, steps: int, threads: int) -> dict:
    log_every = max(1, steps // 10)
    name = f"bench_{Path(cfg['script']).stem}_{cfg.get('phase') or 'all'}_{cfg['env_id']}_{cfg['preset']}"  # one each
    command = [sys.executable, str(ROOT / cfg["script"]), *script_args(cfg, name, steps, log_every)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{cfg['script']} failed:\n{proc.stderr[-2000:]}")
    rates = [float(m) for m in re.findall(r"step \d+: ([\d.]+) steps/s", proc.stdout)]
    return {
        "steps_per_s": statistics.median(rates[1:]),
        "intervals": rates,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,  # its only child so far
    }


def start_load(cfg: dict, steps: int, tmp: Path) -> subprocess.Popen:
    """A second single-thread copy of the run, long enough to outlast the measured one."""
    load_cfg = {**cfg, "runs_dir": str(tmp / "load_runs")}
    command = [
        sys.executable,
        str(ROOT / cfg["script"]),
        *script_args(load_cfg, f"load_{time.time_ns()}", 100 * steps, steps),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(cfg: dict, args, tmp: Path) -> dict:
    steps = args.steps or DEFAULT_STEPS[cfg["preset"]]
    load = start_load(cfg, steps, tmp) if args.load else None
    try:
        if load:
            time.sleep(args.load_warmup)  # its data loaded and its loop running
        worker = json.dumps({"cfg": cfg, "steps": steps, "threads": args.threads})
        proc = subprocess.run([sys.executable, __file__, "--worker", worker], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if args.flops:
            counter = json.dumps({"cfg": cfg, "n": args.flop_steps, "threads": args.threads})
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            proc = subprocess.run(
                [sys.executable, __file__, "--count", counter], capture_output=True, text=True, env=env
            )
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-2000:])
            result |= json.loads(proc.stdout.strip().splitlines()[-1])
            result["achieved_gflops"] = result["gflop_per_step"] * result["steps_per_s"]
    finally:
        if load:
            load.kill()
            load.wait()
    return result


def profile(cfg: dict, steps: int, threads: int, rows: int) -> None:
    import torch
    from torch.profiler import ProfilerActivity

    torch.set_num_threads(threads)
    sys.argv = [cfg["script"], *script_args(cfg, "profile", steps, max(1, steps // 4))]
    with torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
        run_in_process(cfg["script"])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--scripts", nargs="+", default=["select.py"], help="training scripts, from the repository root"
    )
    parser.add_argument("--env-ids", nargs="+", default=["point-robot"], choices=omrl_envs.ENV_IDS)
    parser.add_argument("--presets", nargs="+", default=["cpu", "reference"], choices=list(DEFAULT_STEPS))
    parser.add_argument("--steps", type=int, default=0, help="gradient steps per run (default: cpu 600, reference 50)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="OMP_NUM_THREADS of the measured run")
    parser.add_argument("--load", action="store_true", help="a second single-thread copy of each run trains beside it")
    parser.add_argument("--load-warmup", type=float, default=20.0, help="seconds the load job runs before measuring")
    parser.add_argument("--flops", action="store_true", help="count FLOPs per step and time its matmuls alone")
    parser.add_argument("--flop-steps", type=int, default=10, help="n of --flops (runs of n and 2n steps; even)")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table instead of timing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--count", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flop_steps <= 0 or args.flop_steps % 2:  # the actors update every other step (policy delay 2)
        parser.error(f"--flop-steps must be a positive even number, got {args.flop_steps}")
    if args.worker:  # one timed run in its own process, so that ru_maxrss of RUSAGE_CHILDREN is its alone
        job = json.loads(args.worker)
        print(json.dumps(timed_run(job["cfg"], job["steps"], job["threads"])))
        return
    if args.count:
        job = json.loads(args.count)
        with tempfile.TemporaryDirectory() as runs:
            print(json.dumps(count_worker({**job["cfg"], "runs_dir": runs}, job["n"], job["threads"])))
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        print(
            f"threads {args.threads}, load job: {'yes' if args.load else 'no'}, load average {os.getloadavg()[0]:.2f}"
        )
        for env_id in args.env_ids:
            data_dir, source = dataset_dir_for(env_id, tmp)
            print(f"{env_id}: {source}")
            for script, phase in [(s, p) for s in args.scripts for p in PHASES.get(s, [None])]:
                for preset in args.presets:
                    cfg = {"script": script, "env_id": env_id, "preset": preset, "data_dir": str(data_dir),
                           "runs_dir": str(tmp / "runs"), "phase": phase}  # fmt: skip
                    if args.profile:
                        return profile(cfg, args.steps or DEFAULT_STEPS[preset], args.threads, 25)
                    start = time.time()
                    r = measure(cfg, args, tmp)
                    flops = (
                        f", {r['gflop_per_step']:.2f} GFLOP/step, achieved {r['achieved_gflops']:.1f} GFLOP/s, "
                        f"matmuls alone {r['matmul_gflops']:.1f} GFLOP/s "
                        f"({r['achieved_gflops'] / r['matmul_gflops']:.0%})"
                        if args.flops
                        else ""
                    )
                    label = f"{script} [{phase}]" if phase else script
                    print(
                        f"  {label:28s} {preset:9s} {r['steps_per_s']:7.2f} steps/s, peak RSS "
                        f"{r['peak_rss_gb']:.2f} GB{flops}; wall {time.time() - start:.0f} s, "
                        f"load average {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
