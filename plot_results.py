"""Learning curves and result tables from the runs of select.py and baselines/*.py.

Reads every run directory under `--runs-dir` (TensorBoard events plus `args.json`), groups runs by
environment and method (`exp_name`), and writes, per environment:
  - `<out-dir>/<env_id>.png`: `eval/<protocol>/return` against gradient steps, mean +- sample std over seeds;
  - `<out-dir>/results.md`: per method and protocol, the final evaluation as mean +- std over seeds
    (with the number of seeds), and the best evaluation of the seed-mean curve.

    python plot_results.py --runs-dir runs --out-dir plots
"""

import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

PROTOCOLS = ("offline", "online-prior", "online-random", "online-proximal")


@dataclass
class Args:
    runs_dir: str = "runs"
    """folder holding the run directories (each with args.json and TensorBoard events)"""
    out_dir: str = "plots"
    """where the PNG curves and results.md are written"""
    env_id: str | None = None
    """only this environment (default: every environment found)"""
    protocols: tuple[str, ...] = PROTOCOLS
    """meta-test protocols to plot and tabulate"""


def read_scalars(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All scalar series of one run's TensorBoard events: {tag: (steps, values)}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    series = {}
    for tag in accumulator.Tags()["scalars"]:
        events = accumulator.Scalars(tag)
        series[tag] = (np.array([e.step for e in events]), np.array([e.value for e in events]))
    return series


def collect_runs(runs_dir: Path, env_id: str | None) -> dict:
    """{env_id: {method: [scalars of each seed's run]}} for the runs that have evaluations."""
    runs = defaultdict(lambda: defaultdict(list))
    for args_file in sorted(runs_dir.glob("*/args.json")):
        args = json.loads(args_file.read_text())
        if env_id is not None and args.get("env_id") != env_id:
            continue
        scalars = read_scalars(args_file.parent)
        if any(tag.startswith("eval/") for tag in scalars):
            runs[args["env_id"]][args["exp_name"]].append(scalars)
    return runs


def seed_curves(seed_runs: list, tag: str):
    """Evaluation steps shared by all seeds and the (seeds, steps) matrix of values, or None."""
    series = [run[tag] for run in seed_runs if tag in run]
    if not series:
        return None
    steps = sorted(set.intersection(*(set(s.tolist()) for s, _ in series)))
    if not steps:
        return None
    values = np.array([[dict(zip(s.tolist(), v.tolist()))[step] for step in steps] for s, v in series])
    return np.array(steps), values


def plot_env(env_id: str, methods: dict, protocols, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(protocols), figsize=(4.2 * len(protocols), 3.4), squeeze=False, sharey=True)
    for ax, protocol in zip(axes[0], protocols):
        for method, seed_runs in sorted(methods.items()):
            curves = seed_curves(seed_runs, f"eval/{protocol}/return")
            if curves is None:
                continue
            steps, values = curves
            mean, std = values.mean(0), values.std(0, ddof=min(1, len(values) - 1))  # sample std over seeds
            ax.plot(steps, mean, label=f"{method} ({len(values)} seeds)")
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(protocol)
        ax.set_xlabel("gradient steps")
        ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}k" if x else "0")  # 20k, not 20000: no overlap
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("return (last scored episode)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(env_id)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def results_table(env_id: str, methods: dict, protocols) -> str:
    header = "| method | " + " | ".join(protocols) + " |"
    lines = [f"### {env_id}", "", "final evaluation, mean ± std over seeds [best evaluation of the mean curve]", ""]
    lines += [header, "|---" * (len(protocols) + 1) + "|"]
    for method, seed_runs in sorted(methods.items()):
        cells = []
        for protocol in protocols:
            curves = seed_curves(seed_runs, f"eval/{protocol}/return")
            if curves is None:
                cells.append("–")
                continue
            _, values = curves
            final = values[:, -1]
            spread = final.std(ddof=min(1, len(final) - 1))  # sample std over seeds (0 for one seed)
            cells.append(f"{final.mean():.2f} ± {spread:.2f} (n={len(final)}) [{values.mean(0).max():.2f}]")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    args = tyro.cli(Args)
    unknown = set(args.protocols) - set(PROTOCOLS)
    if unknown:
        sys.exit(f"error: unknown protocol(s) {sorted(unknown)}; choose from {', '.join(PROTOCOLS)}")
    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        sys.exit(f"error: runs directory {runs_dir} does not exist; train first, e.g. python select.py")
    runs = collect_runs(runs_dir, args.env_id)
    if not runs:
        sys.exit(f"error: no run with evaluations under {runs_dir}" + (f" for {args.env_id}" if args.env_id else ""))
    out_dir = Path(args.out_dir)
    tables = []
    for env_id, methods in sorted(runs.items()):
        plot_env(env_id, methods, args.protocols, out_dir / f"{env_id}.png")
        tables.append(results_table(env_id, methods, args.protocols))
    report = "\n".join(tables)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text(report)
    print(report)
    print(f"wrote {out_dir}/results.md and {len(runs)} plot(s)")
