"""The Point-Robot study behind the README's tables: runs (seeds x configurations), re-evaluations, and the tables.

Every run is a real `python <script> --env-id point-robot --seed S ...` in a subprocess, writing its run record to
<runs-dir>/<config>__s<seed>/; a run whose final_eval.json exists is skipped and an interrupted one resumes from
its last checkpoint, so the command can be run again after an interruption. The sigma_test sweep re-evaluates the
default runs' checkpoints (`--eval-checkpoint`, online-proximal only). Tables are mean +- standard deviation over
seeds of the final-episode return (and the context-shift ratio) on the test tasks, read from the runs' JSON files.

    python benchmarks/point_robot_study.py run --jobs 2          # everything (hours on 2 cores), resumable
    python benchmarks/point_robot_study.py run --only select bc-none --jobs 2
    python benchmarks/point_robot_study.py table                 # markdown tables from whatever has finished
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (1, 2, 3)
PROTOCOLS = ("offline", "online-prior", "online-random", "online-proximal")
# Ablations train for ABLATION_STEPS gradient steps (half the preset, to fit the study in a few hours on 2 cores)
# and are compared with the default runs' evaluation at the same step: their first ABLATION_STEPS steps are the
# same computation (the evaluation does not touch the training RNG), so that evaluation is what a run stopped there
# would report.
ABLATION_STEPS = 10_000
ABLATION = ["--num-train-steps", str(ABLATION_STEPS)]
# name: (script, extra flags); every other option is the script's Point-Robot default
CONFIGS = {
    "select": ("select.py", []),
    "bc-none": ("select.py", ["--bc-weighting", "none", *ABLATION]),
    "club-0": ("select.py", ["--club-weight", "0", *ABLATION]),
    "club-100": ("select.py", ["--club-weight", "100", *ABLATION]),
    "q-policy": ("select.py", ["--q-normalization", "policy", *ABLATION]),
    "csro": ("baselines/csro.py", []),
    "focal": ("baselines/focal.py", []),
    "offpearl": ("baselines/offpearl.py", []),
}
SIGMAS = (0.1, 0.2, 0.3, 0.5)  # sigma_test of the proximal collection, re-evaluated on the "select" runs


def run_one(config: str, seed: int, args) -> str:
    script, flags = CONFIGS[config]
    run_dir = Path(args.runs_dir) / f"{config}__s{seed}"
    if not (run_dir / "final_eval.json").is_file():
        command = [sys.executable, script, "--env-id", "point-robot", "--seed", str(seed), "--data-dir", args.data_dir,
                   "--runs-dir", args.runs_dir, "--run-name", run_dir.name, *flags]  # fmt: skip
        if (run_dir / "checkpoint.pt").is_file():
            command.append("--resume")  # an interrupted run goes on from its last checkpoint
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
        start = time.time()
        with open(Path(args.runs_dir) / f"{run_dir.name}.log", "w") as log:
            done = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=args.env)
        if done.returncode != 0:
            return f"{run_dir.name}: FAILED (exit {done.returncode}), see {log.name}"
        print(f"{run_dir.name}: trained in {time.time() - start:.0f} s", flush=True)
    if config == "select":
        for sigma in SIGMAS:
            output = run_dir / f"reeval_sigma{sigma}.json"
            if not output.is_file():
                command = [sys.executable, "select.py", "--eval-checkpoint", str(run_dir / "checkpoint.pt"),
                           "--protocols", "online-proximal", "--proximal-noise-std", str(sigma),
                           "--eval-output", str(output)]  # fmt: skip
                subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env=args.env)
    return f"{run_dir.name}: done"


def mean_std(values: list) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    count = "" if len(values) == len(SEEDS) else f" (n={len(values)})"
    return f"{statistics.mean(values):.2f} ± {spread:.2f}{count}"


def load(path: Path, step: int | None = None):
    """The protocols' results of a final-evaluation JSON, or of the evaluation at `step` in an eval history."""
    if not path.is_file():
        return None
    if step is None:
        return json.loads(path.read_text())["protocols"]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return next((r["protocols"] for r in records if r["step"] == step), None)


def row(name: str, results: list) -> str:
    """Per protocol: mean +- std over seeds of the return, and [the mean context-shift ratio]."""
    cells = []
    for p in PROTOCOLS:
        shift = statistics.mean(r[p]["context_shift"] for r in results)
        cells.append(f"{mean_std([r[p]['return'] for r in results])} [{shift:.2f}]")
    return f"| {name} | " + " | ".join(cells) + " |"


def tables(runs_dir: Path) -> str:
    header = ["| " + " | ".join(PROTOCOLS) + " |", "|---" * 5 + "|"]
    lines = ["Full runs (final evaluation):", "", "| method " + header[0], header[1]]
    for config, (_, flags) in CONFIGS.items():
        if "--num-train-steps" not in flags:
            results = [r for s in SEEDS if (r := load(runs_dir / f"{config}__s{s}" / "final_eval.json"))]
            if results:
                lines.append(row(config, results))
    lines += ["", f"Ablations at {ABLATION_STEPS:,} gradient steps:", "", "| config " + header[0], header[1]]
    results = [r for s in SEEDS if (r := load(runs_dir / f"select__s{s}" / "eval_history.jsonl", ABLATION_STEPS))]
    if results:
        lines.append(row("select (default)", results))
    for config, (_, flags) in CONFIGS.items():
        if "--num-train-steps" in flags:
            results = [r for s in SEEDS if (r := load(runs_dir / f"{config}__s{s}" / "final_eval.json"))]
            if results:
                lines.append(row(config, results))
    lines += ["", "sigma_test of online-proximal (select runs' final checkpoints, re-evaluated):", ""]
    lines += ["| sigma_test | online-proximal | context shift |", "|---|---|---|"]
    for sigma in SIGMAS:
        results = [r for s in SEEDS if (r := load(runs_dir / f"select__s{s}" / f"reeval_sigma{sigma}.json"))]
        if results:
            returns = mean_std([r["online-proximal"]["return"] for r in results])
            shifts = mean_std([r["online-proximal"]["context_shift"] for r in results])
            lines.append(f"| {sigma} | {returns} | {shifts} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "table"))
    parser.add_argument("--runs-dir", default="runs/point_robot_study")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--only", nargs="+", choices=tuple(CONFIGS), default=tuple(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each single-threaded)")
    args = parser.parse_args()
    args.runs_dir = str(Path(args.runs_dir).resolve())
    args.data_dir = str(Path(args.data_dir).resolve())
    args.env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if args.action == "run":
        Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
        jobs = [(c, s) for s in args.seeds for c in args.only if (ROOT / CONFIGS[c][0]).is_file()]  # seed-major
        with ThreadPoolExecutor(args.jobs) as pool:
            for message in pool.map(lambda job: run_one(*job, args), jobs):
                print(message, flush=True)
    print(tables(Path(args.runs_dir)))
