"""Learning curves and result tables of the study: select.py against the baselines, its ablations, re-evaluations.

Reads the committed per-run result files `<results-dir>/<env_id>/<method>__s<seed>.json` (schema 1, written by the
study runner) and, with `--runs-dir`, the TensorBoard run directories of work in progress. Writes, per environment:
  - `<out-dir>/<env_id>.png`: the paper's Figure 1: one panel per protocol, test-task return against gradient steps
    (RL steps: CORRO's and BOReL's pre-training steps come before 0), mean and sample std over seeds of every
    training method, the env's reference returns as horizontal lines;
  - `<out-dir>/summary.png`: one panel per env, each method's best online protocol;
  - `<out-dir>/tables.md` (also printed): (1) final return per method and protocol, (2) SELECT against each
    baseline: difference of means with rliable's stratified-bootstrap interval and probability of improvement,
    (3) ablations beside their base method at the same gradient step, (4) re-evaluations beside the runs they
    re-evaluate. An ablation or a re-evaluation is never merged into its base method.
`--readme README.md docs` replaces each block between the lines `<!-- results:<env_id> -->` and
`<!-- /results:<env_id> -->` in those Markdown files (a folder: every .md file in it) with that env's tables, and the
block `<!-- results:summary -->` with the family x method summary table (with --block-prefix P, the blocks named
P<env_id> and Psummary); `--check-readme README.md docs` exits 1 when such a block is out of date.

    python plot_results.py                                   # results/ -> docs/*.png, docs/tables.md
    python plot_results.py --runs-dir runs --out-dir plots   # the runs in progress too
    python plot_results.py --readme README.md docs           # and the marked blocks of the README and docs pages
"""

import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro

PROTOCOLS = ("offline", "online-prior", "online-random", "online-proximal")  # benchmark.md §3
ONLINE_PROTOCOLS = PROTOCOLS[1:]
METHOD_ORDER = ("select", "csro", "focal", "offpearl", "corro", "borel")  # then the others alphabetically
ANCHORS = {  # reference returns on the test tasks (benchmark.md §4), drawn as horizontal lines and listed in the table
    "point-robot": {"oracle": -3.86, "task-blind": -15.1, "uniform random": -20.4},
}
PAPER_FIGURES = {  # what the papers report on their own data (benchmark.md §4), quoted beside ours in the table
    "point-robot": "CSRO paper, Table 1 (its own Point-Robot data): FOCAL -4.4 with offline context, -14.9 with online "
    "context; OffPEARL -5.1 and -17.8.",
}
BOOTSTRAP_SEED = 0  # the tables are reproducible: every comparison resamples from this seed
BOOTSTRAP_REPS = 10_000
# <method>__s<seed> (or <method>__d<data seed>__s<seed>, study.py --data-seeds): result files and study run dirs
RESULT_NAME = re.compile(r"(?P<method>.+?)(?:__d(?P<data_seed>\d+))?__s(?P<seed>\d+)")
MARKER = re.compile(r"^<!-- results:(?P<name>[\w./-]+) -->$", re.MULTILINE)  # <block prefix><env id>


@dataclass
class Args:
    results_dir: str = "results"
    """folder of the per-run result files, <results-dir>/<env-id>/<method>__s<seed>.json"""
    runs_dir: str | None = None
    """also read the TensorBoard run directories under this folder (work in progress; result files win on a tie)"""
    out_dir: str = "docs"
    """where <env-id>.png, summary.png and tables.md are written"""
    env_ids: tuple[str, ...] = ()
    """only these environments (default: every environment found)"""
    methods: tuple[str, ...] = ()
    """only these methods' rows and curves (default: every method found)"""
    protocols: tuple[str, ...] = PROTOCOLS
    """meta-test protocols to plot and tabulate"""
    bootstrap_reps: int = BOOTSTRAP_REPS
    """bootstrap resamples behind each interval of the SELECT-against-baseline table"""
    readme: tuple[str, ...] = ()
    """also replace the marked results blocks in these Markdown files, a folder meaning every .md file under it (e.g.
    README.md docs)"""
    check_readme: tuple[str, ...] = ()
    """write nothing; exit 1 if a marked results block in these files (as --readme) differs from what would be
    generated"""
    block_prefix: str = ""
    """the README blocks of these results are named <block-prefix><env-id> and <block-prefix>summary (e.g.
    fidelity/ for --results-dir results/fidelity); the blocks of other prefixes are left alone"""
    training_tags: tuple[str, ...] = ()
    """also plot these training scalars of the result files (e.g. charts/brac_alpha), mean over seeds, one panel
    each, to <out-dir>/<env-id>_training.png"""


class InputError(Exception):
    """Bad input, reported as one line."""


@dataclass
class Run:
    """One seed of one method: its final evaluation and its learning curve."""

    env_id: str
    method: str
    seed: int
    variant_of: str | None  # an ablation's base method
    reevaluates: str | None  # "<base>__s<seed>": a re-evaluation of that run's checkpoint
    step: int  # gradient step of the final evaluation
    planned_steps: int  # the step the run was meant to reach (args.num_train_steps)
    final: dict  # {protocol: {"return": float, "per_task": {task: float} | None, "context_shift": float | None}}
    curve: dict = field(default_factory=dict)  # {protocol: {step: (return, context_shift)}}
    source: str = ""
    training: dict = field(default_factory=dict)  # {tag: {step: value}}: the training scalars (result files)
    wall_seconds: float | None = None  # the whole run, every attempt (result files)
    dataset: dict = field(default_factory=dict)  # the dataset's fingerprint (omrl_envs.DatasetHasher), if recorded
    pretraining: int = 0  # steps before the RL phase (CORRO, BOReL): curves and traces are keyed by RL step
    data_seed: int | None = None  # the collection seed of its dataset (study.py --data-seeds), else None
    cpu: str | None = None  # the machine's CPU model (result files)


def pretraining_steps(args: dict) -> int:
    """The gradient steps a run spends before its RL phase: CORRO's CVAE and InfoNCE steps, BOReL's VAE steps (its
    steps and evaluations count from the run's first step, so that its RL steps are the others' after these)."""
    return sum(int(args.get(name) or 0) for name in ("generative_steps", "encoder_steps", "vae_steps"))


# ------------------------------------------------------------------------------------------------
# Reading result files and run directories
# ------------------------------------------------------------------------------------------------
def protocol_results(protocols: dict) -> dict:
    """The fields used here of a final evaluation's per-protocol results."""
    return {
        p: {"return": float(r["return"]), "per_task": r.get("per_task"), "context_shift": r.get("context_shift")}
        for p, r in protocols.items()
    }


def load_result_file(path: Path) -> Run:
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(record, dict) or record.get("schema") != 1:
        schema = record.get("schema") if isinstance(record, dict) else None
        raise InputError(f"{path} is not a schema-1 result file (schema {schema!r})")
    try:
        curve = record["curve"]
        pretraining = pretraining_steps(record.get("args", {}))
        steps = [int(s) - pretraining for s in curve["steps"]]
        run = Run(
            env_id=record["env_id"],
            method=record["method"],
            seed=int(record["seed"]),
            variant_of=record.get("variant_of"),
            reevaluates=record.get("reevaluates"),
            step=int(record["final"]["step"]),
            planned_steps=int(record.get("args", {}).get("num_train_steps") or record["final"]["step"]),
            final=protocol_results(record["final"]["protocols"]),
            source=str(path),
            wall_seconds=None if record.get("wall_seconds") is None else float(record["wall_seconds"]),
            dataset=record["dataset"] if isinstance(record.get("dataset"), dict) else {},
            pretraining=pretraining,
            data_seed=None if record.get("data_seed") is None else int(record["data_seed"]),
            cpu=record["machine"].get("cpu") if isinstance(record.get("machine"), dict) else None,
        )
        for protocol, returns in curve["return"].items():
            shifts = curve.get("context_shift", {}).get(protocol) or [None] * len(steps)
            if len(returns) != len(steps) or len(shifts) != len(steps):
                raise ValueError(f"curve of {protocol} has {len(returns)} values for {len(steps)} steps")
            run.curve[protocol] = dict(zip(steps, zip(map(float, returns), shifts)))
        for tag, trace in record.get("training", {}).items():
            trace_steps = (int(s) - pretraining for s in trace["steps"])
            run.training[tag] = dict(zip(trace_steps, map(float, trace["values"]), strict=True))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(f"{path} is not a valid result file ({type(error).__name__}: {error})") from None
    if run.reevaluates is not None and not RESULT_NAME.fullmatch(str(run.reevaluates)):
        raise InputError(f"{path}: reevaluates {run.reevaluates!r} is not <method>__s<seed>")
    if path.name != f"{run_name(run)}.json" or path.parent.name != run.env_id:
        raise InputError(f"{path} holds {run.env_id}/{run_name(run)}.json: file name and content disagree")
    return run


def run_name(run: Run) -> str:
    """<method>__s<seed>, with __d<data seed> before the seed for a run of study.py --data-seeds."""
    return f"{run.method}{'' if run.data_seed is None else f'__d{run.data_seed}'}__s{run.seed}"


def read_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """All scalar series of one run's TensorBoard events: {tag: {step: value}}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: {e.step: e.value for e in accumulator.Scalars(tag)} for tag in accumulator.Tags()["scalars"]}


def load_run_dir(run_dir: Path) -> Run | None:
    """A run directory of select.py or a baseline (args.json, TensorBoard events), or None before its first
    evaluation. The final evaluation is final_eval.json, else the latest line of eval_history.jsonl, else the latest
    logged evaluation (then without per-task scores). A directory named <name>__s<seed> (the study runner's names)
    is method <name>; when <name> is not the script's exp_name, it is an ablation of that script."""
    try:
        args = json.loads((run_dir / "args.json").read_text())
        scalars = read_scalars(run_dir)
        curve = {}
        for protocol in PROTOCOLS:
            returns, shifts = scalars.get(f"eval/{protocol}/return", {}), scalars.get(f"eval/{protocol}/context_shift")
            if returns:
                curve[protocol] = {s: (v, (shifts or {}).get(s)) for s, v in sorted(returns.items())}
        if (run_dir / "final_eval.json").is_file():
            final = json.loads((run_dir / "final_eval.json").read_text())
        elif (run_dir / "eval_history.jsonl").is_file() and (run_dir / "eval_history.jsonl").read_text().strip():
            final = json.loads((run_dir / "eval_history.jsonl").read_text().strip().splitlines()[-1])
        elif curve:
            step = max(max(c) for c in curve.values())
            final = {
                "step": step,
                "protocols": {
                    p: {"return": c[step][0], "context_shift": c[step][1]} for p, c in curve.items() if step in c
                },
            }
        else:
            return None
        name, pretraining = RESULT_NAME.fullmatch(run_dir.name), pretraining_steps(args)
        method = name["method"] if name and int(name["seed"]) == args["seed"] else args["exp_name"]
        data_seed = int(name["data_seed"]) if name and name["data_seed"] and method == name["method"] else None
        return Run(
            env_id=args["env_id"],
            method=method,
            seed=int(args["seed"]),
            variant_of=args["exp_name"] if method != args["exp_name"] else None,
            reevaluates=None,
            step=int(final["step"]),
            planned_steps=int(args.get("num_train_steps") or final["step"]),
            final=protocol_results(final["protocols"]),
            curve={p: {step - pretraining: v for step, v in c.items()} for p, c in curve.items()},
            source=str(run_dir),
            dataset=final["dataset"] if isinstance(final.get("dataset"), dict) else {},
            pretraining=pretraining,
            data_seed=data_seed,
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"{run_dir} is not a readable run directory ({type(error).__name__}: {error})") from None


def load_runs(results_dir, runs_dir=None) -> list[Run]:
    """Every run of the result files and (optionally) the run directories; a result file wins over a run directory
    with the same env, method and seed, and a later run directory over an earlier one."""
    results_dir = Path(results_dir)
    runs = {}
    if results_dir.is_dir():
        for path in sorted(results_dir.glob("*/*.json")):
            run = load_result_file(path)
            runs[run.env_id, run.method, run.data_seed, run.seed] = run
    if runs_dir is not None:
        if not Path(runs_dir).is_dir():
            raise InputError(f"runs directory {runs_dir} does not exist")
        found = [*Path(runs_dir).glob("*/args.json"), *Path(runs_dir).glob("*/*/args.json")]  # study: <env>/<run>/
        for args_file in sorted(found):
            run = load_run_dir(args_file.parent)
            if run is None:
                continue
            key = (run.env_id, run.method, run.data_seed, run.seed)
            if key in runs and Path(runs[key].source).is_file():
                print(f"note: {run.source} skipped: {runs[key].source} holds that run", file=sys.stderr)
                continue
            if key in runs:
                print(f"note: {runs[key].source} skipped: {run.source} is a later run of it", file=sys.stderr)
            runs[key] = run
    if not runs:
        where = f"{results_dir}/<env-id>/<method>__s<seed>.json" + (
            f" or run directories under {runs_dir}" if runs_dir else ""
        )
        raise InputError(
            f"no result files found ({where}); the study runner writes them (python benchmarks/study.py"
            " run), or pass --runs-dir runs to read the TensorBoard run directories of runs in progress"
        )
    return list(runs.values())


def group_runs(runs: list[Run], env_ids=None) -> dict:
    """{env_id: {method: [runs, by seed]}}, envs sorted, methods in METHOD_ORDER and then alphabetically."""
    grouped = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if not env_ids or run.env_id in env_ids:
            grouped[run.env_id][run.method].append(run)
    missing = set(env_ids or ()) - set(grouped)
    if missing:
        raise InputError(
            f"no results for {', '.join(sorted(missing))}; found {', '.join(sorted({r.env_id for r in runs}))}"
        )
    result = {}
    for env_id in sorted(grouped):
        result[env_id] = {
            m: sorted(grouped[env_id][m], key=lambda r: (r.data_seed or 0, r.seed)) for m in ordered(grouped[env_id])
        }
        for method, seeds in result[env_id].items():
            kinds = {(r.variant_of, r.reevaluates.rsplit("__s", 1)[0] if r.reevaluates else None) for r in seeds}
            if len(kinds) > 1:
                raise InputError(
                    f"{env_id}/{method}: its seeds disagree on variant_of/reevaluates ({sorted(map(str, kinds))})"
                )
    return result


def method_key(method: str) -> tuple:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def ordered(methods) -> list[str]:
    return sorted(methods, key=method_key)


def is_training(runs: list[Run]) -> bool:
    return runs[0].reevaluates is None


def is_base(runs: list[Run]) -> bool:
    return runs[0].reevaluates is None and runs[0].variant_of is None


# ------------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------------
def sample_std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def fmt(x: float, sign: bool = False) -> str:
    """Two decimals (with a sign when `sign`); a value that rounds to zero is 0.00, never -0.00."""
    x = round(float(x), 2) + 0.0  # -0.0 + 0.0 is 0.0
    return f"{x:+.2f}" if sign else f"{x:.2f}"


def mean_std(values) -> str:
    """mean ± sample std; one value has no spread ("± –"), none is "–"."""
    if not len(values):
        return "–"
    return f"{fmt(np.mean(values))} ± {fmt(sample_std(values)) if len(values) > 1 else '–'}"


def mean_or_dash(values) -> str:
    values = [v for v in values if v is not None]
    return fmt(np.mean(values)) if values else "–"


def mean_curve(runs: list[Run], protocol: str):
    """The evaluation steps that every seed with this protocol has, and the (seeds, steps) matrix of its returns;
    None if no seed has the protocol."""
    curves = [run.curve[protocol] for run in runs if run.curve.get(protocol)]
    if not curves:
        return None
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    if not steps:
        return None
    return np.array(steps), np.array([[c[s][0] for s in steps] for c in curves], dtype=float)


def final_step(runs: list[Run]) -> int:
    """The latest final-evaluation step of a method's seeds (the others are named by stop_notes)."""
    return max(r.step for r in runs)


def final_rl_step(runs: list[Run]) -> int:
    """final_step less the pre-training steps (CORRO, BOReL): the RL step the curves are keyed by."""
    return final_step(runs) - max(r.pretraining for r in runs)


def steps_label(runs: list[Run]) -> str:
    """final_step for the tables: RL steps + pre-training steps where a method pre-trains (CORRO, BOReL)."""
    pretraining = max(r.pretraining for r in runs)
    return f"{final_rl_step(runs):,}" + (f" + {pretraining:,} pre-training" if pretraining else "")


def stop_notes(method: str, runs: list[Run]) -> list[str]:
    """A note for each group of seeds that stopped before the others (or before their planned step)."""
    target, stopped = max(max(r.planned_steps, r.step) for r in runs), defaultdict(list)
    for run in runs:
        if run.step < target:
            stopped[run.step].append(run.seed)
    common = [c[0][-1] for p in PROTOCOLS if (c := mean_curve(runs, p)) is not None]
    upto = f" (up to step {max(common):,})" if common else ""
    notes = []
    for step, seeds in sorted(stopped.items()):
        which = f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds))
        notes.append(
            f"{method}: {which} stopped at {step:,} of {target:,} gradient steps; the tables use each seed's own final"
            f" evaluation, and {method}'s curves are averaged over the steps that every seed has{upto}."
        )
    return notes


def score_matrix(runs: list[Run], protocol: str):
    """(seeds, test tasks) matrix of the final per-task returns, or None if a seed lacks them."""
    per_task = [run.final[protocol].get("per_task") for run in runs if protocol in run.final]
    if not per_task or any(not p for p in per_task) or any(set(p) != set(per_task[0]) for p in per_task):
        return None
    tasks = sorted(per_task[0], key=int)
    return np.array([[p[t] for t in tasks] for p in per_task], dtype=float)


def load_rliable():
    """rliable's (library, metrics) and None, or None and why it does not import (not installed, or installed with
    dependencies that fail: arch 7.2 raises TypeError on pandas 3)."""
    try:
        from rliable import library, metrics
    except Exception as error:
        return None, f"{type(error).__name__}: {error}".replace("\n", " ")
    return (library, metrics), None


def improvement(
    select_scores, baseline_scores, rliable, reps: int = BOOTSTRAP_REPS
) -> tuple[float, float, float, float]:
    """SELECT against a baseline from (seeds, tasks) score matrices: the difference of the mean scores, its 95%
    stratified-bootstrap interval (seeds resampled within each task, each method independently) and the probability
    of improvement P(select > baseline) averaged over tasks; rliable computes all three."""
    library, metrics = rliable
    state = np.random.get_state()
    np.random.seed(BOOTSTRAP_SEED)  # rliable draws the resampled indices from NumPy's global generator
    try:
        points, intervals = library.get_interval_estimates(
            {"difference": [select_scores, baseline_scores]}, lambda x, y: np.array([x.mean() - y.mean()]), reps=reps
        )
    finally:
        np.random.set_state(state)
    probability = metrics.probability_of_improvement(select_scores, baseline_scores)
    low, high = intervals["difference"][:, 0]
    return float(points["difference"][0]), float(low), float(high), float(probability)


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------
def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


def cell(values: list[tuple], seeds: int, best: float | None = None) -> str:
    """Return mean +- sample std over seeds of (return, context shift) pairs, [mean shift], (best b), (n=k) when
    fewer than `seeds` seeds have a value."""
    if not values:
        return "–"
    text = f"{mean_std([v[0] for v in values])} [{mean_or_dash([v[1] for v in values])}]"
    text += f" (best {fmt(best)})" if best is not None else ""
    return text + (f" (n={len(values)})" if len(values) != seeds else "")


def finals(runs: list[Run], protocol: str) -> list[tuple]:
    """(return, context shift) of each seed's final evaluation of `protocol`."""
    return [(r.final[protocol]["return"], r.final[protocol]["context_shift"]) for r in runs if protocol in r.final]


def at_step(runs: list[Run], protocol: str, step: int) -> list[tuple]:
    """(return, context shift) of each seed's evaluation at RL step `step`: from its curve, or its final evaluation
    there."""
    values = []
    for run in runs:
        if step in run.curve.get(protocol, {}):
            values.append(run.curve[protocol][step])
        elif run.step - run.pretraining == step and protocol in run.final:
            values.append(finals([run], protocol)[0])
    return values


def env_anchors(env_id: str, methods: dict) -> dict:
    """The returns drawn as lines and listed in the table: benchmark.md's (ANCHORS), else the dataset's own range as
    the runs recorded it: the mean test-task return of its saved episodes at the first and last kept checkpoint."""
    if env_id in ANCHORS:
        return ANCHORS[env_id]
    ranges = {}  # content hash -> (first, last), in the order the runs list them
    for run in (r for runs in methods.values() for r in runs):
        returns = (run.dataset.get("checkpoint_returns") or {}).get("test_tasks")
        if returns:
            ranges.setdefault(str(run.dataset.get("content_hash"))[:12], (returns[0], returns[-1]))
    if len(ranges) == 1:  # one dataset (the usual case)
        first, last = next(iter(ranges.values()))
        return {"dataset, first checkpoint": first, "dataset, last checkpoint": last}
    return {  # seeds on different datasets (rebuilt on another kind of CPU): each dataset's range, by its hash
        f"dataset {h}..., {which} checkpoint": value
        for h, (first, last) in sorted(ranges.items())
        for which, value in (("first", first), ("last", last))
    }


def methods_table(env_id: str, methods: dict, base: list[str], protocols) -> list[str]:
    anchors = env_anchors(env_id, methods)
    caption = (
        "Final evaluation on the test tasks: return, mean ± sample std over seeds (± –: one seed);"
        " [mean context-shift ratio];"
        " (best: the best evaluation of the seed-mean curve)."
    )
    if anchors:
        caption += " Reference returns: " + ", ".join(f"{name} {fmt(value)}" for name, value in anchors.items()) + "."
    if env_id in PAPER_FIGURES:
        caption += " " + PAPER_FIGURES[env_id]
    rows = []
    for m in base:
        runs = methods[m]
        cells = []
        for p in protocols:
            curve = mean_curve(runs, p)
            cells.append(cell(finals(runs, p), len(runs), None if curve is None else curve[1].mean(0).max()))
        rows.append([m, str(len(runs)), steps_label(runs), *cells])
    return [caption, "", *table(["method", "seeds", "steps", *protocols], rows), ""]


PLATEAU_RISE = 0.05  # a rise above the best so far of more than this share of the dataset's range is still learning
LATE_EVALUATIONS = 3  # the late mean: each seed's mean over its last this many evaluations


def plateau_step(steps, curve, data_range: float) -> int | None:
    """The first evaluation step after which the curve never again rises by more than PLATEAU_RISE x data_range above
    its best so far; None ("still rising") when the last evaluation is such a rise."""
    best, last_rise = curve[0], 0
    for k in range(1, len(curve)):
        if curve[k] > best + PLATEAU_RISE * abs(data_range):
            last_rise = k
        best = max(best, curve[k])
    return None if last_rise == len(curve) - 1 and len(curve) > 1 else int(steps[last_rise])


def late_values(runs: list[Run], protocol: str) -> list[float]:
    """Each seed's mean return over its last LATE_EVALUATIONS evaluations (its curve, or its final evaluation)."""
    values = []
    for run in runs:
        curve = run.curve.get(protocol) or {}
        returns = [curve[s][0] for s in sorted(curve)][-LATE_EVALUATIONS:]
        if not returns and protocol in run.final:
            returns = [run.final[protocol]["return"]]
        if returns:
            values.append(float(np.mean(returns)))
    return values


def dataset_range(methods: dict) -> float | None:
    """The dataset's last minus first kept checkpoint's mean test-task return, as the runs recorded it (the first
    dataset found), else None."""
    for run in (r for runs in methods.values() for r in runs):
        returns = (run.dataset.get("checkpoint_returns") or {}).get("test_tasks")
        if returns:
            return float(returns[-1] - returns[0])
    return None


def plateau_table(methods: dict, base: list[str], protocols) -> list[str]:
    """Per method: where its seed-mean `offline` curve stops improving, and each protocol's late mean."""
    data_range = dataset_range(methods)
    rows = []
    for m in base:
        runs = methods[m]
        curve = mean_curve(runs, "offline")
        if curve is None or data_range is None:
            plateau = "–"
        else:
            step = plateau_step(curve[0], curve[1].mean(0), data_range)
            plateau = "still rising" if step is None else f"{step:,}"
        rows.append(
            [m, str(len(runs)), steps_label(runs), plateau] + [mean_std(late_values(runs, p)) for p in protocols]
        )
    where = "–" if data_range is None else fmt(data_range)
    caption = (
        "Where each method stops improving, and a steadier figure than one final evaluation. Plateau: the first"
        " evaluation step (RL steps) after which the seed-mean `offline` curve never again rises by more than"
        f" {PLATEAU_RISE:.0%} of the dataset's first-to-last checkpoint range ({where}) above its best so far; still"
        " rising: its last evaluation is such a rise. Late mean: each seed's mean return over its last"
        f" {LATE_EVALUATIONS} evaluations, then mean ± sample std over seeds (± –: one seed)."
    )
    return [caption, "", *table(["method", "seeds", "steps", "plateau", *protocols], rows), ""]


def comparison_table(methods: dict, baselines: list[str], protocols, reps: int) -> list[str]:
    """SELECT against each baseline, per protocol."""
    rliable, _ = load_rliable()
    if rliable is None:
        caption = (
            "SELECT against each baseline: select − baseline, the difference of mean final return (positive: SELECT"
            " is better), and both methods' mean ± sample std over seeds. rliable is not importable here: no interval"
            " or probability of improvement was computed."
        )
    else:
        caption = (
            "SELECT against each baseline: select − baseline, the difference of mean final return over seeds x test"
            " tasks (positive: SELECT is better), [its 95% stratified-bootstrap interval: rliable,"
            f" {reps:,} resamples of the seeds within each test task, seed {BOOTSTRAP_SEED}]; P: the probability of"
            " improvement P(select > baseline), averaged over the test tasks (rliable)."
        )
    rows = []
    for m in baselines:
        row = [f"select − {m}"]
        for p in protocols:
            mine, theirs = finals(methods["select"], p), finals(methods[m], p)
            x, y = score_matrix(methods["select"], p), score_matrix(methods[m], p)
            if not mine or not theirs:
                row.append("–")
            elif rliable is not None and x is not None and y is not None:
                difference, low, high, probability = improvement(x, y, rliable, reps)
                if min(len(x), len(y)) < 2:  # resampling one seed gives that seed: no interval to speak of
                    row.append(f"{fmt(difference, True)} [no interval: 1 seed], P {fmt(probability)}")
                else:
                    row.append(f"{fmt(difference, True)} [{fmt(low, True)}, {fmt(high, True)}], P {fmt(probability)}")
            else:
                a, b = [v[0] for v in mine], [v[0] for v in theirs]
                why = "" if rliable is None else "; no per-task scores: no interval"
                row.append(f"{fmt(np.mean(a) - np.mean(b), True)} ({mean_std(a)} vs {mean_std(b)}{why})")
        rows.append(row)
    return [caption, "", *table(["comparison", *protocols], rows), ""]


def ablation_table(methods: dict, ablations: list[str], protocols) -> tuple[list[str], list[str]]:
    """Each ablation below its base method's evaluation at the ablation's final step; and notes."""
    caption = (
        "Ablations: each variant's final evaluation below its base method's evaluation at the same gradient step;"
        " mean ± sample std over seeds [mean context-shift ratio]."
    )
    groups = defaultdict(list)  # (base method, RL step): its ablations
    for m in ablations:
        groups[methods[m][0].variant_of, final_rl_step(methods[m])].append(m)
    rows, notes = [], []
    for of, step in sorted(groups, key=lambda group: (method_key(group[0]), group[1])):
        base_runs = methods.get(of, [])
        cells = [cell(at_step(base_runs, p, step), len(base_runs)) for p in protocols]
        if not base_runs:
            notes.append(f"{', '.join(groups[of, step])}: the base method {of} has no runs here.")
        elif all(c == "–" for c in cells):
            notes.append(f"{of} has no evaluation at step {step:,} to set beside {', '.join(groups[of, step])}.")
        rows.append([f"{of} (base)", "", f"{step:,}", str(len(base_runs)), *cells])
        for m in groups[of, step]:
            runs = methods[m]
            rows.append([m, of, f"{step:,}", str(len(runs))] + [cell(finals(runs, p), len(runs)) for p in protocols])
    return [caption, "", *table(["method", "variant of", "step", "seeds", *protocols], rows), ""], notes


def reevaluation_table(methods: dict, reevaluations: list[str], protocols) -> list[str]:
    """Per re-evaluation and protocol, beside the final evaluation of the same seeds of the re-evaluated method."""
    caption = (
        "Re-evaluations of trained checkpoints (other meta-test settings) beside the final evaluation of the runs"
        " they re-evaluate (the same seeds); mean ± sample std over seeds."
    )
    rows = []
    for m in reevaluations:
        runs = methods[m]
        of = runs[0].reevaluates.rsplit("__s", 1)[0]
        seeds = {int(r.reevaluates.rsplit("__s", 1)[1]) for r in runs}
        base_runs = [r for r in methods.get(of, []) if r.seed in seeds]
        for p in protocols:
            mine, theirs = finals(runs, p), finals(base_runs, p)
            if mine:
                shifts, base_shifts = (
                    [v[1] for v in mine if v[1] is not None],
                    [v[1] for v in theirs if v[1] is not None],
                )
                base_return = mean_std([v[0] for v in theirs]) + (
                    f" (n={len(theirs)})" if theirs and len(theirs) != len(mine) else ""
                )
                rows.append(
                    [
                        m,
                        of,
                        p,
                        str(len(mine)),
                        mean_std([v[0] for v in mine]),
                        mean_std(shifts),
                        base_return,
                        mean_std(base_shifts),
                    ]
                )
    header = ["re-evaluation", "of", "protocol", "seeds", "return", "context shift", "base return", "base shift"]
    return [caption, "", *table(header, rows), ""]


def cost_table(methods: dict, trained: list[str]) -> list[str]:
    """What each training run cost here: steps/s, evaluation and wall minutes, mean (range) over its seeds."""

    def mean_range(values: list[float], digits: int) -> str:
        return f"{np.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})" if values else "—"

    rows = []
    for m in trained:
        runs = methods[m]
        sps = [r.training["charts/SPS"][max(r.training["charts/SPS"])] for r in runs if r.training.get("charts/SPS")]
        evals = [
            sum(r.training["charts/eval_seconds"].values()) / 60 for r in runs if "charts/eval_seconds" in r.training
        ]
        walls = [r.wall_seconds / 60 for r in runs if r.wall_seconds is not None]
        rows.append(
            [m, str(len(runs)), steps_label(runs), mean_range(sps, 1), mean_range(evals, 1), mean_range(walls, 1)]
        )
    caption = (
        "Cost per run: training steps/s (the run's average, `charts/SPS`), minutes spent in the evaluations"
        " (`charts/eval_seconds`, every point of the curve) and wall minutes of the whole run (every attempt: data"
        " loading, training, evaluations, saving); mean (min-max) over the seeds with these figures; — where the"
        " result files predate the training scalars."
    )
    header = ["method", "seeds", "steps", "steps/s", "evaluation min", "wall min"]
    return [caption, "", *table(header, rows), ""]


def dataset_notes(methods: dict, shown: list[str]) -> list[str]:
    """A note when the runs of one seed did not all train on the same dataset (content hash): their comparison is
    then not on equal data. A rebuild gives the same hash on the same kind of CPU, not across CPUs
    (docs/families-and-datasets.md)."""
    by_seed = defaultdict(lambda: defaultdict(list))  # seed -> content hash -> methods
    for m in shown:
        for run in methods[m]:
            if is_training([run]) and run.dataset.get("content_hash"):
                by_seed[run.seed][run.dataset["content_hash"][:12]].append(m)
    return [
        f"seed {seed} ran on {len(hashes)} different datasets: "
        + "; ".join(f"`{h}...` ({', '.join(ms)})" for h, ms in sorted(hashes.items()))
        + ": the methods of this seed are not compared on the same data."
        for seed, hashes in sorted(by_seed.items())
        if len(hashes) > 1
    ]


# ------------------------------------------------------------------------------------------------
# Several datasets (study.py --data-seeds): how much of the spread the dataset sample decides
# ------------------------------------------------------------------------------------------------
def by_dataset(runs: list[Run]) -> dict[int, list[Run]]:
    """{data seed: runs}, data seeds in order."""
    grouped = defaultdict(list)
    for run in runs:
        grouped[run.data_seed].append(run)
    return {d: grouped[d] for d in sorted(grouped)}


def cpu_kind(cpu: str | None) -> str:
    return "Intel Xeon" if "Intel" in (cpu or "") else "AMD EPYC" if "AMD" in (cpu or "") else (cpu or "CPU unknown")


def dataset_label(data_seed: int, runs: list[Run]) -> str:
    """Collection seed, content hash (the first 12 hex digits, or several when the runs disagree) and machine kind."""
    hashes = sorted({str(r.dataset.get("content_hash"))[:12] for r in runs})
    kinds = sorted({cpu_kind(r.cpu) for r in runs})
    return f"{data_seed} (`{'`, `'.join(hashes)}`, {', '.join(kinds)})"


def variance_components(groups: list[list[float]]) -> dict:
    """One-way random-effects split of returns grouped by dataset (each group: one dataset's seeds): the SD of the
    dataset means, the pooled within-dataset (seed) SD, and the dataset's share of the variance of one run,
    share = s_D^2 / (s_D^2 + s_W^2) with s_D^2 = max(0, var(dataset means) - s_W^2 / n), n the harmonic mean seeds per
    dataset (the ANOVA estimator, floored at 0)."""
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    means = np.array([g.mean() for g in groups])
    dof = sum(len(g) - 1 for g in groups)
    within_var = sum(((g - g.mean()) ** 2).sum() for g in groups) / dof if dof else float("nan")
    between_var = float(np.var(means, ddof=1)) if len(groups) > 1 else float("nan")
    n = len(groups) / sum(1.0 / len(g) for g in groups)
    dataset_var = max(0.0, between_var - within_var / n)
    total = dataset_var + within_var
    return {
        "between_sd": between_var**0.5,
        "within_sd": within_var**0.5,
        "share": dataset_var / total if total > 0 else float("nan"),
    }


def pooled_difference(mine: dict, theirs: dict, reps: int) -> tuple[float, float, float]:
    """select − baseline pooled over datasets ({data seed: final returns of its seeds} each): the mean over datasets
    of the difference of seed means, and its 95% two-stage bootstrap interval (datasets resampled with replacement,
    then within each drawn dataset each method's seeds, independently), seed BOOTSTRAP_SEED."""
    datasets = [d for d in mine if d in theirs]
    point = float(np.mean([np.mean(mine[d]) - np.mean(theirs[d]) for d in datasets]))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    drawn = rng.integers(0, len(datasets), (reps, len(datasets)))  # the datasets of each resample
    total = np.zeros(reps)
    for slot in range(len(datasets)):
        for k, d in enumerate(datasets):
            a, b = np.asarray(mine[d], dtype=float), np.asarray(theirs[d], dtype=float)
            a_means = a[rng.integers(0, len(a), (reps, len(a)))].mean(1)
            b_means = b[rng.integers(0, len(b), (reps, len(b)))].mean(1)
            total += np.where(drawn[:, slot] == k, a_means - b_means, 0.0)
    low, high = np.percentile(total / len(datasets), [2.5, 97.5])
    return point, float(low), float(high)


def failing_tasks(runs: list[Run], protocol: str, threshold: float) -> str:
    """The test tasks whose final return is below threshold in at least one seed: "task (seeds failing/seeds)"."""
    counts = defaultdict(int)
    for run in runs:
        for task, value in (run.final.get(protocol, {}).get("per_task") or {}).items():
            counts[int(task)] += value < threshold
    failing = [f"{t} ({c}/{len(runs)})" for t, c in sorted(counts.items()) if c]
    return ", ".join(failing) if failing else "none"


def dataset_study_tables(env_id: str, methods: dict, protocols, reps: int) -> list[str]:
    """The tables of an env whose runs trained on datasets of several collection seeds: final returns per dataset,
    the between- and within-dataset spread, SELECT − each baseline per dataset and pooled, the failing tasks."""
    datasets = {m: by_dataset(runs) for m, runs in methods.items()}
    rows = []
    for d in sorted({d for per in datasets.values() for d in per}):
        for m, per in datasets.items():
            if d in per:
                rows.append([dataset_label(d, per[d]), m, str(len(per[d]))] + [
                    cell(finals(per[d], p), len(per[d])) for p in protocols
                ])  # fmt: skip
    lines = [
        "Final evaluation on each dataset (collection seed, content hash, the CPU kind that built it and trained on"
        " it): return, mean ± sample std over training seeds [mean context-shift ratio].",
        "",
        *table(["dataset", "method", "seeds", *protocols], rows),
        "",
        "The spread of the final return over datasets and over training seeds: all runs' mean ± sample std; the sample"
        " std of the dataset means (between datasets); the pooled sample std of the seeds within a dataset; and the"
        " datasets' share of the variance of one run (one-way random effects: the variance of the dataset means less"
        " the part the seeds explain, floored at 0, over that plus the within-dataset variance).",
        "",
    ]
    rows = []
    for m, per in datasets.items():
        for p in protocols:
            groups = [[r.final[p]["return"] for r in runs if p in r.final] for runs in per.values()]
            values = [v for g in groups for v in g]
            if not values:
                continue
            split = variance_components(groups)
            sds = [fmt(split[k]) if np.isfinite(split[k]) else "–" for k in ("between_sd", "within_sd")]
            share = f"{100 * split['share']:.0f}%" if np.isfinite(split["share"]) else "–"
            rows.append([m, p, str(len(groups)), str(len(values)), mean_std(values), *sds, share])
    lines += [*table(["method", "protocol", "datasets", "runs", "return", "between datasets", "within a dataset",
                      "datasets' share"], rows), ""]  # fmt: skip
    rliable, _ = load_rliable()
    if "select" in methods:
        lines += [
            "SELECT against each baseline on each dataset: select − baseline, the difference of mean final return"
            " [95% stratified-bootstrap interval over the seeds within each test task: rliable,"
            f" {reps:,} resamples, seed {BOOTSTRAP_SEED}]; pooled: the mean over datasets of the per-dataset"
            " differences [95% two-stage bootstrap interval: datasets resampled, then each method's seeds within"
            f" them; {reps:,} resamples, seed {BOOTSTRAP_SEED}].",
            "",
        ]
        rows = []
        for m in (m for m in methods if m != "select"):
            for d in [*datasets[m], "pooled"]:
                row = [f"select − {m}", str(d)]
                for p in protocols:
                    if d == "pooled":
                        mine = {k: [v[0] for v in finals(r, p)] for k, r in datasets["select"].items()}
                        theirs = {k: [v[0] for v in finals(r, p)] for k, r in datasets[m].items()}
                        mine, theirs = {k: v for k, v in mine.items() if v}, {k: v for k, v in theirs.items() if v}
                        if len(set(mine) & set(theirs)) < 2:
                            row.append("–")
                            continue
                        diff, low, high = pooled_difference(mine, theirs, reps)
                        row.append(f"{fmt(diff, True)} [{fmt(low, True)}, {fmt(high, True)}]")
                        continue
                    x = score_matrix(datasets["select"].get(d, []), p)
                    y = score_matrix(datasets[m][d], p)
                    if x is None or y is None or rliable is None:
                        row.append("–")
                    else:
                        diff, low, high, _ = improvement(x, y, rliable, reps)
                        interval = (
                            "no interval: 1 seed" if min(len(x), len(y)) < 2 else f"{fmt(low, True)}, {fmt(high, True)}"
                        )
                        row.append(f"{fmt(diff, True)} [{interval}]")
                rows.append(row)
        lines += [*table(["comparison", "dataset", *protocols], rows), ""]
    threshold = ANCHORS.get(env_id, {}).get("task-blind")
    if threshold is not None:
        lines += [
            f"Failing test tasks: those whose final return (mean over its evaluation runs) is below the task-blind"
            f" return {fmt(threshold)} in at least one seed, as task (seeds failing / seeds), per dataset.",
            "",
        ]
        every = sorted({d for per in datasets.values() for d in per})
        rows = [
            [m, p, *(failing_tasks(datasets[m][d], p, threshold) if d in datasets[m] else "–" for d in every)]
            for m in methods
            for p in protocols
        ]
        lines += [*table(["method", "protocol", *(f"dataset {d}" for d in every)], rows), ""]
    return lines


def env_tables(env_id: str, methods: dict, protocols, shown=None, reps: int = BOOTSTRAP_REPS) -> str:
    """The Markdown tables of one env, without a heading. `methods` is {method: runs} (every method of the env: the
    base methods of ablations and re-evaluations are looked up there); `shown` restricts the rows. Runs on datasets of
    several collection seeds (study.py --data-seeds) get the tables of dataset_study_tables instead."""
    shown = [m for m in methods if not shown or m in shown]
    protocols = [p for p in protocols if any(p in r.final for m in shown for r in methods[m])]
    if any(r.data_seed is not None for m in shown for r in methods[m]):
        lines = dataset_study_tables(env_id, {m: methods[m] for m in shown}, protocols, reps)
        return "\n".join(lines).rstrip("\n") + "\n"
    base = [m for m in shown if is_base(methods[m])]
    baselines = [m for m in base if m != "select"]
    ablations = [m for m in shown if is_training(methods[m]) and not is_base(methods[m])]
    reevaluations = [m for m in shown if not is_training(methods[m])]
    lines, notes = [], [note for m in shown if is_training(methods[m]) for note in stop_notes(m, methods[m])]
    if base:
        lines += methods_table(env_id, methods, base, protocols)
        lines += plateau_table(methods, base, protocols)
    if "select" in base and baselines:
        lines += comparison_table(methods, baselines, protocols, reps)
    if ablations:
        ablation_lines, ablation_notes = ablation_table(methods, ablations, protocols)
        lines, notes = lines + ablation_lines, notes + ablation_notes
    if reevaluations:
        lines += reevaluation_table(methods, reevaluations, protocols)
    if base or ablations:
        lines += cost_table(methods, [*base, *ablations])
    notes += dataset_notes(methods, shown)
    if notes:
        lines += ["Notes:", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def results_tables(
    results_dir, env_ids=None, methods=None, *, runs_dir=None, protocols=PROTOCOLS, reps: int = BOOTSTRAP_REPS
) -> str:
    """Every env's tables, each under a `### <env_id>` heading (what the study runner's `table` prints)."""
    grouped = group_runs(load_runs(results_dir, runs_dir), env_ids)
    return "\n".join(f"### {e}\n\n" + env_tables(e, ms, protocols, methods, reps) for e, ms in grouped.items())


SUMMARY_PROTOCOLS = ("online-proximal", "offline")  # the summary's cells: the SELECT paper's headline, then offline


def summary_table(grouped: dict) -> str:
    """One line per env, one column per base method: its final return under SUMMARY_PROTOCOLS, mean over seeds; the
    best online-proximal of the line in bold (the README's results summary)."""
    methods = ordered({m for ms in grouped.values() for m, runs in ms.items() if is_base(runs)})
    rows = []
    for env_id, ms in grouped.items():
        base = {m: runs for m, runs in ms.items() if is_base(runs)}
        means = {m: {p: np.mean([v[0] for v in finals(runs, p)]) if finals(runs, p) else None
                     for p in SUMMARY_PROTOCOLS} for m, runs in base.items()}  # fmt: skip
        headline = [v[SUMMARY_PROTOCOLS[0]] for v in means.values() if v[SUMMARY_PROTOCOLS[0]] is not None]
        seeds = sorted({len(runs) for runs in base.values()})
        steps = sorted({final_rl_step(runs) for runs in base.values()})
        cells = []
        for m in methods:
            if m not in means:
                cells.append("–")
                continue
            first, second = (means[m][p] for p in SUMMARY_PROTOCOLS)
            text = "–" if first is None else f"{first:.1f}"
            text = f"**{text}**" if first is not None and first == max(headline) else text
            fewer = len(base[m]) < seeds[-1]  # a method with fewer seeds than the line's most says so in its cell
            count = f" [{len(base[m])} seed{'s' * (len(base[m]) > 1)}]" if fewer else ""
            cells.append(text + ("" if second is None else f" ({second:.1f})") + count)
        spans = [f"{seeds[-1]:,}", f"{steps[0]:,}" if steps[0] == steps[-1] else f"{steps[0]:,}-{steps[-1]:,}"]
        rows.append([env_id, *spans, *cells])
    caption = (
        f"Final return on the test tasks, mean over seeds: `{SUMMARY_PROTOCOLS[0]}` (`{SUMMARY_PROTOCOLS[1]}` in"
        " brackets); the best `online-proximal` of each family in bold. Seeds: the most any method of the line has; a"
        " method with fewer says so in its cell ([1 seed]). RL steps: the training budget (CORRO and BOReL pre-train"
        " on top). Per-family pages have the spread over seeds, the intervals and the other protocols."
    )
    return "\n".join([caption, "", *table(["family", "seeds", "RL steps", *methods], rows)]) + "\n"


def markdown_files(paths) -> list[Path]:
    """The files of --readme / --check-readme: each file, and every .md file under each folder, in order."""
    files = []
    for path in map(Path, paths):
        if not path.exists():
            raise InputError(f"{path} does not exist")
        files += sorted(path.rglob("*.md")) if path.is_dir() else [path]
    return list(dict.fromkeys(files))


# ------------------------------------------------------------------------------------------------
# README blocks
# ------------------------------------------------------------------------------------------------
def replace_readme_blocks(
    text: str, blocks: dict[str, str], path: str = "README", prefix: str = ""
) -> tuple[str, list[str]]:
    """`text` with each block marked <prefix><env_id> replaced by blocks[env_id], and the env ids whose block
    changed; blocks of another prefix (the part of the name up to its last /) are left alone."""
    changed, pieces, position = [], [], 0
    for start in MARKER.finditer(text):
        name = start["name"]
        if name[: name.rfind("/") + 1] != prefix:
            continue
        env_id = name[len(prefix) :]
        end_marker = f"<!-- /results:{name} -->"
        end = text.find("\n" + end_marker, start.end())
        if end < 0:
            raise InputError(f"{path}: the block of {name} has no closing line {end_marker}")
        if env_id not in blocks:
            raise InputError(f"{path} marks a results block for {name}, but there are no results for {env_id}")
        new = "\n\n" + blocks[env_id] + "\n"
        if text[start.end() : end + 1] != new:
            changed.append(env_id)
        pieces += [text[position : start.end()], new]
        position = end + 1
    return "".join(pieces) + text[position:], changed


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------
def draw_curve(ax, runs: list[Run], protocol: str, label: str, color: str) -> None:
    curve = mean_curve(runs, protocol)
    if curve is None:
        return
    steps, values = curve
    mean, std = values.mean(0), np.array([sample_std(column) for column in values.T])
    linestyle = "--" if runs[0].variant_of else "-"  # ablations dashed
    seeds = f"{len(values)} seed" + ("s" if len(values) > 1 else "")
    ax.plot(steps, mean, label=f"{label} ({seeds})", color=color, linestyle=linestyle)
    ax.fill_between(steps, mean - std, mean + std, alpha=0.2, color=color, linewidth=0)


def draw_anchors(ax, anchors: dict) -> None:
    for name, value in anchors.items():
        ax.axhline(value, color="0.45", linestyle=":", linewidth=1)
        ax.text(0.01, value, f"{name} {value:.4g}", transform=ax.get_yaxis_transform(), fontsize=7, color="0.35",
                va="bottom")  # fmt: skip


def style_axis(ax, title: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("RL gradient steps (after any pre-training)")
    ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}k" if x else "0")  # 20k, not 20000: no overlap
    ax.grid(alpha=0.3)


SPARE_COLORS = ("black", "gold", "darkcyan", "magenta", "saddlebrown", "lime", "navy", "salmon")


def method_colors(plotted: dict) -> dict:
    """Per env, a colour per method: a base method has the same colour in every figure (C0, C1, ..., then
    SPARE_COLORS, in table order); a figure's variants take the colours after the base methods', so that no two
    curves of one figure share a colour however many variants other envs have (up to 18 curves)."""
    palette = [f"C{i}" for i in range(10)] + list(SPARE_COLORS)
    bases = ordered({m for ms in plotted.values() for m, runs in ms.items() if is_base(runs)})
    base = {m: palette[i % len(palette)] for i, m in enumerate(bases)}
    spare = palette[len(bases) :] or palette
    colors = {}
    for env_id, methods in plotted.items():
        variants = [m for m in ordered(methods) if m not in base and is_training(methods[m])]
        reevaluations = {m: "0.5" for m in methods if not is_training(methods[m])}  # no curve, no colour taken
        colors[env_id] = {**base, **reevaluations, **{m: spare[i % len(spare)] for i, m in enumerate(variants)}}
    return colors


def plot_env(env_id: str, methods: dict, protocols, colors: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    training = [runs for runs in methods.values() if is_training(runs)]
    protocols = [p for p in protocols if any(r.curve.get(p) for runs in training for r in runs)] or protocols
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.2 * len(protocols), 3.6), squeeze=False, sharey=True)
    anchors = env_anchors(env_id, methods)
    for ax, protocol in zip(axes[0], protocols):
        for method, runs in methods.items():
            if is_training(runs):  # ablations too (dashed); re-evaluations have no curve
                draw_curve(ax, runs, protocol, method, colors[method])
        draw_anchors(ax, anchors)
        style_axis(ax, protocol)
    axes[0][0].set_ylabel("test-task return (last scored episode)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:  # a method may lack a protocol: one legend entry per label over all panels
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles, labels = [*handles, h], [*labels, label]
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.suptitle(f"{env_id}: mean ± sample std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_training(env_id: str, methods: dict, tags, colors: dict, path: Path) -> None:
    """One panel per training scalar: each method's mean over its seeds at the steps all of them logged."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tags), figsize=(4.8 * len(tags), 3.6), squeeze=False)
    for ax, tag in zip(axes[0], tags):
        for method, runs in methods.items():
            traces = [r.training[tag] for r in runs if tag in r.training]
            if traces:
                steps = sorted(set.intersection(*(set(t) for t in traces)))
                ax.plot(steps, [np.mean([t[s] for t in traces]) for s in steps], color=colors[method],
                        label=f"{method} ({len(traces)} seed{'s' * (len(traces) > 1)})")  # fmt: skip
        style_axis(ax, tag)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.suptitle(f"{env_id}: training scalars, mean over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_summary(grouped: dict, colors: dict, path: Path) -> None:
    """Per env, each base method's online protocol with the highest mean final return (colors: method_colors)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(grouped), figsize=(4.8 * len(grouped), 3.6), squeeze=False)
    for ax, (env_id, methods) in zip(axes[0], grouped.items()):
        for method, runs in methods.items():
            online = [p for p in ONLINE_PROTOCOLS if any(p in r.final for r in runs)]
            if is_base(runs) and online:
                best = max(online, key=lambda p: np.mean([r.final[p]["return"] for r in runs if p in r.final]))
                draw_curve(ax, runs, best, f"{method}: {best}", colors[env_id][method])
        draw_anchors(ax, env_anchors(env_id, methods))
        style_axis(ax, env_id)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("test-task return, best online protocol")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: Args) -> None:
    unknown = set(args.protocols) - set(PROTOCOLS)
    if unknown:
        raise InputError(f"unknown protocol(s) {sorted(unknown)}; choose from {', '.join(PROTOCOLS)}")
    protocols = [p for p in PROTOCOLS if p in args.protocols]
    grouped = group_runs(load_runs(args.results_dir, args.runs_dir), args.env_ids)
    readmes, checked = markdown_files(args.readme), markdown_files(args.check_readme)
    _, rliable_error = load_rliable()
    summary = {"summary": summary_table(grouped)}  # the block <prefix>summary, where a page marks one
    if checked:
        blocks = {e: env_tables(e, m, protocols, args.methods, args.bootstrap_reps) for e, m in grouped.items()}
        for path in checked:
            _, changed = replace_readme_blocks(path.read_text(), {**blocks, **summary}, str(path), args.block_prefix)
            if changed:
                raise InputError(
                    f"{path}: the results block of {', '.join(changed)} differs from the results; regenerate it with"
                    f" python plot_results.py --readme {' '.join(args.check_readme)}"
                    + (" (rliable is not importable here: no bootstrap intervals)" if rliable_error else "")
                )
        print(f"{' '.join(args.check_readme)}: results blocks up to date")
        return
    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plotted = {e: {m: r for m, r in ms.items() if not args.methods or m in args.methods} for e, ms in grouped.items()}
    colors = method_colors(plotted)
    blocks = {}
    for env_id, methods in grouped.items():
        plot_env(env_id, plotted[env_id], protocols, colors[env_id], out_dir / f"{env_id}.png")
        if args.training_tags:
            path = out_dir / f"{env_id}_training.png"
            plot_training(env_id, plotted[env_id], args.training_tags, colors[env_id], path)
        blocks[env_id] = env_tables(env_id, methods, protocols, args.methods, args.bootstrap_reps)
    plot_summary(plotted, colors, out_dir / "summary.png")
    report = "\n".join(f"### {e}\n\n{b}" for e, b in blocks.items())
    (out_dir / "tables.md").write_text(report)
    print(report)
    print(f"wrote {out_dir}/tables.md, summary.png and {len(grouped)} env plot(s)")
    if rliable_error:
        print(f"note: rliable is not importable ({rliable_error}): the tables have no bootstrap intervals")
    for path in readmes:
        new_text, changed = replace_readme_blocks(path.read_text(), {**blocks, **summary}, str(path), args.block_prefix)
        if changed:
            path.write_text(new_text)
            print(f"{path}: updated {', '.join(changed)}")


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except InputError as error:
        sys.exit(f"error: {error}")
