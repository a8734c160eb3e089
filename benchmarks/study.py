"""A study: envs x methods x seeds of the training scripts, run here or on Slurm, resumable, one result file per run.

A method is a named entry of METHODS: a training run (`script` + extra `flags`; ablations are methods too, with
`variant_of`), or a re-evaluation of another method's final checkpoint (`reevaluates`, e.g. the sigma_test sweep).
Every run is a real `python <script> ...` subprocess writing its run record to <runs-dir>/<env>/<method>__s<seed>/
and its output to <runs-dir>/<env>/<method>__s<seed>.log. When it has finished, its compact result (final
evaluation, learning curve, code, dataset and machine; schema in `result_record`) goes to
<results-dir>/<env>/<method>__s<seed>.json, which `table` reads (plot_results.results_tables).

Running the same command again continues a study: a run with a result is skipped, a finished run without one gets
its result written, an interrupted run (checkpoint.pt, no final_eval.json) goes on with --resume, anything else
starts over. A missing dataset is built first (collect_sac.py; one collector per env at a time, across processes).

    python benchmarks/study.py run --envs point-robot --methods select csro --seeds 1 2     # 2 runs at a time
    python benchmarks/study.py run --methods main ablations sigma                           # the Point-Robot study
    python benchmarks/study.py run --methods select --flags="--num-train-steps 400"         # flags for every run
    python benchmarks/study.py run --envs cheetah-vel --methods main --budget long --seeds 1   # BUDGETS["long"]
    python benchmarks/study.py run --methods select csro --seeds 1 2 3 --data-seeds 0 1 2   # several datasets
    python benchmarks/study.py run --backend slurm --slurm-partition cpu --jobs 20          # one Slurm job array
    python benchmarks/study.py status --methods main ablations sigma                        # what is done
    python benchmarks/study.py collect --methods main        # result files of runs finished outside the runner
    python benchmarks/study.py table --methods main ablations sigma                         # Markdown tables
"""

import argparse
import fcntl
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]

# ---- the methods ----
# Ablations: select.py with one option changed, trained for 10,000 steps and compared with select's evaluation at
# that step. The sigma_test sweep re-evaluates select's final checkpoints (0.3, the default, is "select" itself).
ABLATIONS = {
    "select-bc-none": ["--bc-weighting", "none"],
    "select-club-0": ["--club-weight", "0"],
    "select-club-100": ["--club-weight", "100"],
    "select-q-policy": ["--q-normalization", "policy"],
}
ABLATION_STEPS = ["--num-train-steps", "10000"]
SIGMA_EVAL = ["--protocols", "online-proximal", "--proximal-noise-std"]
# The comparison-fidelity measurements on a MuJoCo family (docs/fidelity.md), every setting explicit so that none
# depends on a default: each method with raw and with normalised states, and each BRAC baseline with BRAC's true
# gradient penalty instead of the reference code's value penalty, on raw states as the reference. The training
# length is the one the first seed ran (FIDELITY_STEPS), whatever the cpu preset says today.
BRAC_BASELINES = ("csro", "focal", "offpearl")
FIDELITY_STEPS = ["--num-train-steps", "10000", "--eval-every", "1000"]
STATES = {
    "raw": ["--normalize-states", "False", *FIDELITY_STEPS],
    "norm": ["--normalize-states", "True", *FIDELITY_STEPS],
}
GP_GRADIENT = ["--gradient-penalty", "gradient", *STATES["raw"]]
FIDELITY = {  # in the order they run: today's defaults of csro and select first, then what each one changes
    "csro-states-raw": ("csro", STATES["raw"]),
    "select-states-norm": ("select", STATES["norm"]),
    "csro-states-norm": ("csro", STATES["norm"]),
    "select-states-raw": ("select", STATES["raw"]),
    "csro-gp-gradient": ("csro", GP_GRADIENT),
    **{f"{m}-states-{k}": (m, f) for m in BRAC_BASELINES[1:] for k, f in STATES.items()},
    **{f"{m}-gp-gradient": (m, GP_GRADIENT) for m in BRAC_BASELINES[1:]},
}
METHODS = {
    "select": {"script": "select.py", "flags": []},
    "csro": {"script": "baselines/csro.py", "flags": []},
    "focal": {"script": "baselines/focal.py", "flags": []},
    "offpearl": {"script": "baselines/offpearl.py", "flags": []},
    "corro": {"script": "baselines/corro.py", "flags": []},
    "borel": {"script": "baselines/borel.py", "flags": []},
    "borel-vae6000": {"script": "baselines/borel.py", "flags": ["--vae-steps", "6000"], "variant_of": "borel"},
    **{
        m: {"script": "select.py", "flags": [*f, *ABLATION_STEPS], "variant_of": "select"} for m, f in ABLATIONS.items()
    },
    **{f"select-sigma{s}": {"reevaluates": "select", "flags": [*SIGMA_EVAL, str(s)]} for s in (0.1, 0.2, 0.5)},
}
METHODS |= {m: {**METHODS[base], "flags": flags} for m, (base, flags) in FIDELITY.items()}  # each its own method
REINFER_EVAL = ["--reinfer", "csro", "--protocols", "online-random", "online-proximal"]  # CSRO's re-inference timing
METHODS |= {f"{m}-reinfer-csro": {"reevaluates": m, "flags": REINFER_EVAL} for m in FIDELITY}
GROUPS = {
    "main": ["select", "csro", "focal", "offpearl"],
    "corro-borel": ["corro", "borel"],  # the two pre-training methods: Point-Robot with 5 seeds first
    "borel-vae": ["borel-vae6000"],  # BOReL's VAE trained 3 times longer (its loss still falls at 2,000 steps)
    "ablations": list(ABLATIONS),
    "sigma": ["select-sigma0.1", "select-sigma0.2", "select-sigma0.5"],
    "fidelity": [*FIDELITY, *(f"{m}-reinfer-csro" for m in FIDELITY)],
}
METHOD_KEYS = {"script", "flags", "variant_of", "reevaluates"}
# --budget: the training length of every run, per env (RL steps; CORRO and BOReL pre-train on top), and the evaluation
# interval. "quick" is each script's cpu preset (7,000 MuJoCo steps, chosen where SELECT's cheetah-vel curve slows
# down: SELECT near its best, the BRAC baselines still climbing); "long" trains every method until its curve has
# flattened, as far as a CPU affords (the paper trains 105,000 steps, ant-goal 210,000). A budget's results and runs
# have their own folders, <results-dir>/<budget>/ and <runs-dir>/<budget>/ (quick: the folders themselves).
BUDGETS = {
    "quick": {},
    "long": {
        "cheetah-vel": (30_000, 2_500),
        "hopper-rand-params": (20_000, 2_500),
        "walker-rand-params": (20_000, 2_500),
        "humanoid-dir": (12_000, 2_000),
        "ant-goal": (20_000, 2_500),
    },
}

# A budget counts RL steps, every method's; a script that pre-trains (CORRO, BOReL) counts its pre-training in
# --num-train-steps, so the runner adds it on top: its pre-training flags and their defaults in the script (a run's
# flags override them; a test checks the defaults against the scripts).
PRETRAINING = {
    "baselines/corro.py": {"--generative-steps": 1_000, "--encoder-steps": 10_000},
    "baselines/borel.py": {"--vae-steps": 2_000},
}


def pretraining_steps(script: str, flags) -> int:
    """The pre-training steps of a run of `script` with these flags (the last value of a flag wins)."""
    total = 0
    for flag, default in PRETRAINING.get(script, {}).items():
        values = [flags[i + 1] for i, f in enumerate(flags[:-1]) if f == flag]
        values += [f.split("=", 1)[1] for f in flags if f.startswith(flag + "=")]
        total += int(values[-1]) if values else default
    return total


FINAL, REEVAL, ATTEMPTS = "final_eval.json", "reeval.json", "study_attempts.json"  # files in a run directory
HEADER = "==== study.py"  # starts the line the runner writes into a run's log before each attempt
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # torch: 1 intra-op thread


@dataclass(frozen=True)
class Run:
    env_id: str
    method: str
    seed: int
    script: str
    flags: tuple[str, ...] = ()
    variant_of: str | None = None
    reevaluates: str | None = None  # the method whose final checkpoint (same env and seed) this run re-evaluates
    data_seed: int | None = None  # --data-seeds: the collection seed of its dataset (None: the default dataset)

    @property
    def tag(self) -> str:
        """The data seed's part of a run name: "" on the default dataset, "__d<K>" on collection seed K's."""
        return "" if self.data_seed is None else f"__d{self.data_seed}"

    @property
    def name(self) -> str:
        return f"{self.method}{self.tag}__s{self.seed}"

    @property
    def base_name(self) -> str | None:
        return f"{self.reevaluates}{self.tag}__s{self.seed}" if self.reevaluates else None


@dataclass(frozen=True)
class Study:
    runs_dir: Path
    results_dir: Path
    data_dir: Path
    study_flags: tuple[str, ...] = ()  # --flags: appended to every run's command
    collect_flags: tuple[str, ...] = ()  # --collect-flags: appended to collect_sac.py's command
    budget: str = "quick"  # --budget: BUDGETS[budget][env] sets each run's steps and evaluation interval

    def run_dir(self, run: Run) -> Path:
        return self.runs_dir / run.env_id / run.name

    def log(self, run: Run) -> Path:
        return self.runs_dir / run.env_id / f"{run.name}.log"

    def result(self, run: Run) -> Path:
        return self.results_dir / run.env_id / f"{run.name}.json"

    def output(self, run: Run) -> Path:
        """What a finished run leaves: the training script's final evaluation, or the re-evaluation's output."""
        return self.run_dir(run) / (REEVAL if run.reevaluates else FINAL)

    def base_dir(self, run: Run) -> Path:
        return self.runs_dir / run.env_id / run.base_name

    def data_dir_of(self, data_seed: int | None) -> Path:
        """Where a run's dataset lives: <data-dir>/<env>/ for the default collection (seed 0), and
        <data-dir>/data-seed-<K>/<env>/ for collection seed K > 0 (--data-seeds), side by side."""
        return self.data_dir if not data_seed else self.data_dir / f"data-seed-{data_seed}"

    def command(self, run: Run) -> list[str]:
        if run.reevaluates:
            checkpoint = self.base_dir(run) / "checkpoint.pt"
            command = [run.script, "--eval-checkpoint", str(checkpoint), "--eval-output", str(self.output(run))]
        else:
            command = [run.script, "--env-id", run.env_id, "--seed", str(run.seed), "--data-dir",
                       str(self.data_dir_of(run.data_seed)), "--runs-dir", str(self.runs_dir / run.env_id),
                       "--run-name", run.name]  # fmt: skip
            if run.env_id in BUDGETS[self.budget]:
                steps, eval_every = BUDGETS[self.budget][run.env_id]
                steps += pretraining_steps(run.script, [*run.flags, *self.study_flags])  # RL steps + pre-training
                command += ["--num-train-steps", str(steps), "--eval-every", str(eval_every)]
        return [sys.executable, *command, *run.flags, *self.study_flags]


def load_methods(methods_file: str | None) -> dict:
    """METHODS, with the entries of a JSON file ({name: {"script", "flags", "variant_of"} or {"reevaluates", ...}})
    added or replacing ours."""
    methods = dict(METHODS)
    if methods_file:
        for name, entry in json.loads(Path(methods_file).read_text()).items():
            if not isinstance(entry, dict) or set(entry) - METHOD_KEYS:
                raise SystemExit(f"error: {methods_file}: method {name!r} must be an object with keys {METHOD_KEYS}")
            methods[name] = {"flags": [], **entry}
    for name, entry in methods.items():
        base = entry.get("reevaluates")
        if base is not None and (base not in methods or methods[base].get("reevaluates")):
            raise SystemExit(f"error: method {name!r} re-evaluates {base!r}, which is not a training method")
        if base is None and "script" not in entry:
            raise SystemExit(f"error: method {name!r} needs a 'script' (or 'reevaluates')")
    return methods


def expand_methods(names: list[str], methods: dict) -> list[str]:
    """Method and group names -> method names, in the order given, each once."""
    expanded = []
    for name in names:
        if name not in GROUPS and name not in methods:
            known = ", ".join([*GROUPS, *methods])
            raise SystemExit(f"error: unknown method or group {name!r}; known: {known}")
        expanded += [m for m in GROUPS.get(name, [name]) if m not in expanded]
    return expanded


def plan(env_ids: list[str], method_names: list[str], seeds: list[int], methods: dict, data_seeds=(None,)) -> list[Run]:
    """Every run of the selection, seed-major (seed 1 of every env, dataset and method first), re-evaluations after
    the training runs of their seed; data_seeds: the datasets' collection seeds (None: the default dataset)."""
    runs = []
    for seed in seeds:
        for env_id in env_ids:
            for data_seed in data_seeds:
                for reevaluations in (False, True):
                    for name in method_names:
                        entry = methods[name]
                        if bool(entry.get("reevaluates")) != reevaluations:
                            continue
                        script = methods[entry["reevaluates"]]["script"] if reevaluations else entry["script"]
                        runs.append(Run(env_id, name, seed, script, tuple(entry.get("flags", ())),
                                        entry.get("variant_of"), entry.get("reevaluates"), data_seed))  # fmt: skip
    return runs


# ---- the result file ----
def read_json(path: Path):
    return json.loads(Path(path).read_text())


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def read_history(path: Path) -> list[dict]:
    """eval_history.jsonl's records; a line cut short by a kill is left out."""
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return records


def read_training(run_dir: Path) -> dict:
    """The training scalars the script wrote to TensorBoard (losses/*, charts/*: e.g. BRAC's alpha and divergence),
    {tag: {"steps", "values"}}; a step logged twice (a resumed run) keeps its last value."""
    if not any(Path(run_dir).glob("events.out.tfevents.*")):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    training = {}
    for tag in sorted(t for t in events.Tags()["scalars"] if t.startswith(("losses/", "charts/"))):
        by_step = {e.step: float(f"{e.value:.6g}") for e in events.Scalars(tag)}
        training[tag] = {"steps": sorted(by_step), "values": [by_step[k] for k in sorted(by_step)]}
    return training


def code_version(*paths: Path) -> dict:
    """For a final evaluation that does not say which code ran: the checkout's now (omrl_envs.code_version)."""
    sys.path.append(str(ROOT))  # appended: the standard library's `select` stays first
    import omrl_envs

    return omrl_envs.code_version(*(p for p in paths if p.is_file()))


def machine(torch_version: str | None) -> dict:
    cpu = platform.processor() or None
    try:
        models = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = models[0] if models else cpu
    except OSError:
        pass
    if torch_version is None:
        try:
            torch_version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "torch": torch_version, "python": platform.python_version(), "platform": platform.platform()}


def protocol_summary(result: dict) -> dict:
    """One protocol's final result, without the per-run arrays (the result file stays a few KB)."""
    explored = result.get("exploration_transitions")  # [[transitions per round] per run]
    return {
        "return": result["return"],
        "per_task": result.get("per_task"),
        "per_round": result.get("per_round"),
        "per_round_runs": result.get("per_round_runs"),
        "context_shift": result.get("context_shift"),
        "context_shift_per_task": result.get("context_shift_per_task"),
        "exploration_transitions_min": [min(r) for r in zip(*explored)] if explored else None,
    }


def portable(obj, root: Path = ROOT, python: str = sys.executable):
    """obj with the machine's paths taken out, for a result file that is committed: the Python executable becomes
    "python", a path inside root becomes relative to it (the commands run with root as working directory)."""
    if isinstance(obj, dict):
        return {k: portable(v, root, python) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable(v, root, python) for v in obj]
    if isinstance(obj, str):
        if obj == python:
            return "python"
        prefix = str(root).rstrip("/") + "/"
        return obj[len(prefix) :] if obj.startswith(prefix) else "." if obj == str(root) else obj
    return obj


def result_record(run: Run, run_dir: Path, command: list[str], study_flags=()) -> dict:
    """The result file of a finished run, from its run directory: the final evaluation (final_eval.json, or the
    re-evaluation's reeval.json), the learning curve (eval_history.jsonl) and the runner's attempts."""
    run_dir = Path(run_dir)
    final = read_json(run_dir / (REEVAL if run.reevaluates else FINAL))
    args = final.get("args") or {}
    attempts = read_json(run_dir / ATTEMPTS) if (run_dir / ATTEMPTS).is_file() else []
    wall_seconds = final.get("wall_seconds")
    if wall_seconds is None and attempts:
        wall_seconds = round(sum(a.get("seconds") or 0.0 for a in attempts), 1)
    code = final.get("code")
    if code is None:
        code = code_version(ROOT / run.script, ROOT / "omrl_envs.py", ROOT / "collect_sac.py")
    history = [] if run.reevaluates else read_history(run_dir / "eval_history.jsonl")
    protocols = list(history[-1]["protocols"]) if history else []
    return portable(
        {
            "schema": 1,
            "env_id": run.env_id,
            "method": run.method,
            "variant_of": run.variant_of,
            "reevaluates": run.base_name,
            "script": run.script,
            "flags": list(run.flags),
            "study_flags": list(study_flags),
            "seed": run.seed,
            "data_seed": run.data_seed,
            "command": list(command),
            "args": args,
            "preset": args.get("preset"),
            "code": code,
            "dataset": final.get("dataset"),
            "wall_seconds": wall_seconds,
            "threads": final.get("threads", int(CHILD_ENV["OMP_NUM_THREADS"])),
            "device": final.get("device"),
            "machine": machine(final.get("torch")),
            "attempts": attempts,
            "final": {
                "step": final["step"],
                "protocols": {p: protocol_summary(r) for p, r in final["protocols"].items()},
            },
            "curve": {
                "steps": [h["step"] for h in history],
                "return": {p: [h["protocols"][p]["return"] for h in history] for p in protocols},
                "context_shift": {p: [h["protocols"][p].get("context_shift") for h in history] for p in protocols},
            },
            "training": {} if run.reevaluates else read_training(run_dir),
        }
    )


# ---- running one run ----
class Children:
    """The subprocesses of this process; stop() ends them and refuses new ones (Ctrl-C, SIGTERM, a Slurm requeue).
    A run killed this way loses at most the steps since its last checkpoint."""

    def __init__(self):
        self._lock = threading.Lock()
        self._procs = set()
        self.stopping = False

    def run(self, command: list[str], log, cwd: Path) -> int | None:
        """Run command to the end, output to the open file log; its exit code, or None if stopping."""
        with self._lock:
            if self.stopping:
                return None
            proc = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **CHILD_ENV})  # fmt: skip
            self._procs.add(proc)
        try:
            return proc.wait()
        except BaseException:  # this process is going away (a signal, submitit's requeue): the child goes too
            proc.kill()
            proc.wait()
            raise
        finally:
            with self._lock:
                self._procs.discard(proc)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to every child, SIGKILL to those still there after grace_s (0: do not wait)."""
        with self._lock:
            self.stopping = True
            procs = list(self._procs)
        for proc in procs:
            proc.terminate()
        deadline = time.time() + grace_s
        for proc in procs if grace_s > 0 else ():
            try:
                proc.wait(timeout=max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()


def write_header(log, command: list[str]) -> None:
    """The line before each attempt's output in a log (open for appending): attempt number, time, command."""
    attempt = 1 + sum(line.startswith(HEADER) for line in open(log.name, errors="replace"))
    log.write(f"{HEADER} attempt {attempt}, {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(command)}\n")
    log.flush()


def last_error_line(log: Path) -> str:
    """Of the log's last attempt: the last line starting with "error:", else the last line of the last traceback
    (the exception), else the last non-empty line."""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {log})"
    starts = [i for i, line in enumerate(lines) if line.startswith(HEADER)]
    lines = [line.rstrip() for line in lines[starts[-1] + 1 if starts else 0 :] if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1]
    tracebacks = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if tracebacks:
        unindented = [line for line in lines[tracebacks[-1] + 1 :] if not line[0].isspace()]
        if unindented:
            return unindented[-1]
    return lines[-1] if lines else "(empty log)"


def dataset_seed_mismatch(manifest: Path, data_seed: int | None) -> str | None:
    """Why the dataset at manifest is not collection seed data_seed's (None: it is, or no seed was asked for)."""
    if data_seed is None or not manifest.is_file():
        return None
    seed = read_json(manifest).get("seed")
    if seed != data_seed:
        return (f"{manifest.parent} was collected with --seed {seed}, not {data_seed}; move it away or pass another "
                f"--data-dir")  # fmt: skip
    return None


def ensure_dataset(study: Study, env_id: str, children: Children, data_seed: int | None = None) -> str | None:
    """Build the env's dataset of collection seed data_seed (None: the default, seed 0) with collect_sac.py when its
    manifest is missing. One collector per dataset at a time, across processes too: a lock file, and the manifest
    checked again once the lock is ours. None when the dataset is there, else why not."""
    data_dir = study.data_dir_of(data_seed)
    manifest = data_dir / env_id / "manifest.json"
    if manifest.is_file():
        return dataset_seed_mismatch(manifest, data_seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / f".{env_id}.lock", "w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the file is closed
                break
            except BlockingIOError:  # another collector for this env (this process or another) is at work
                if children.stopping:
                    return "interrupted while waiting for the dataset"
                time.sleep(0.5)
        if manifest.is_file():
            return dataset_seed_mismatch(manifest, data_seed)
        log = study.runs_dir / env_id / ("collect.log" if data_seed is None else f"collect__d{data_seed}.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        seed = [] if data_seed is None else ["--seed", str(data_seed)]
        command = [sys.executable, str(ROOT / "collect_sac.py"), "--env-id", env_id, "--data-dir", str(data_dir),
                   *seed, *study.collect_flags]  # fmt: skip
        tqdm.write(f"{env_id}: no dataset at {manifest.parent}; building it (log: {log})")
        with open(log, "a") as f:
            write_header(f, command)
            code = children.run(command, f, cwd=log.parent)  # its TensorBoard run goes to <runs-dir>/<env>/runs/
        if code is None or children.stopping:
            return "interrupted while building the dataset"
        if code != 0 or not manifest.is_file():
            return f"building the dataset failed (collect_sac.py exit {code}): {last_error_line(log)} (log: {log})"
    return None


@dataclass
class Outcome:
    run: Run
    status: str  # done (this call finished it), collected (had finished: result written), failed, interrupted
    command: list[str]
    log: Path
    reason: str = ""
    seconds: float | None = None


def execute(study: Study, run: Run, children: Children) -> Outcome:
    """Bring one run to a result file: run (or resume) its script unless it has finished, check what it left,
    write the result. The dataset is assumed to be there."""
    run_dir, log, output = study.run_dir(run), study.log(run), study.output(run)
    command = study.command(run)

    def outcome(status, reason="", seconds=None):
        return Outcome(run, status, command, log, reason, seconds)

    if study.result(run).is_file():
        return outcome("done", "had a result")
    seconds = None
    if not output.is_file():
        if run.reevaluates and not (study.base_dir(run) / FINAL).is_file():
            return outcome("failed", f"needs the finished run {run.env_id}/{run.base_name} (method {run.reevaluates})")
        attempt = command
        if not run.reevaluates and (run_dir / "checkpoint.pt").is_file():
            attempt = [*command, "--resume"]  # interrupted: goes on from its last checkpoint
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        attempts = read_json(run_dir / ATTEMPTS) if (run_dir / ATTEMPTS).is_file() else []
        start, code = time.time(), None
        with open(log, "a") as f:
            write_header(f, attempt)
            try:
                code = children.run(attempt, f, cwd=ROOT)
            finally:  # also when this process is stopped: the time spent counts
                seconds = round(time.time() - start, 1)
                started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start))
                attempts.append({"started": started, "seconds": seconds, "exit": code, "resume": attempt != command})
                write_json_atomic(run_dir / ATTEMPTS, attempts)
        if code is None or children.stopping:
            return outcome("interrupted", seconds=seconds)
        if code != 0:
            return outcome("failed", f"exit {code}: {last_error_line(log)}", seconds)
        if not output.is_file():
            return outcome("failed", f"exit 0 but no {output}", seconds)
    try:
        record = result_record(run, run_dir, command, study.study_flags)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return outcome("failed", f"{output}: cannot make the result ({e.__class__.__name__}: {e})", seconds)
    write_json_atomic(study.result(run), record)
    return outcome("done", seconds=seconds) if seconds is not None else outcome("collected")


# ---- the study, here ----
class Interrupted(Exception):
    pass


def raise_interrupted(signum, frame):
    raise Interrupted(signum)


class Progress:
    """A tqdm bar over the study's runs (done / running / failed / left) and one line per finished run."""

    def __init__(self, runs: list[Run], study: Study):
        self.total = len(runs)
        self.counts = {"done": sum(study.result(r).is_file() for r in runs), "running": 0, "failed": 0}
        self.bar = tqdm(total=self.total, initial=self.counts["done"], unit="run", desc="study", dynamic_ncols=True)
        if self.counts["done"]:
            tqdm.write(f"{self.counts['done']} of {self.total} runs have a result already: skipped")
        self.refresh()

    def refresh(self, redraw=True):
        left = self.total - sum(self.counts.values())
        self.bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in self.counts.items()) + f", left {left}", redraw)

    def started(self):
        self.counts["running"] += 1
        self.refresh()

    def finished(self, outcome: Outcome, was_running=True):
        self.counts["running"] -= was_running
        name = f"{outcome.run.env_id}/{outcome.run.name}"
        took = f" after {outcome.seconds:.0f} s" if outcome.seconds is not None else ""
        if outcome.status == "interrupted":
            tqdm.write(f"{name}: interrupted{took}")
        elif outcome.status == "failed":
            self.counts["failed"] += 1
            tqdm.write(f"{name}: FAILED{took}: {outcome.reason}")
        else:
            self.counts["done"] += 1
            what = {"collected": "had finished: result written", "done": f"done in {outcome.seconds or 0:.0f} s"}
            tqdm.write(f"{name}: {outcome.reason or what[outcome.status]}")
        self.refresh(redraw=outcome.status == "interrupted")
        if outcome.status != "interrupted":
            self.bar.update(1)

    def close(self):
        self.bar.close()


class Datasets:
    """ensure_dataset once per dataset for this process (the threads of one dataset wait for one collector)."""

    def __init__(self, study: Study, children: Children):
        self.study, self.children = study, children
        self.locks, self.outcomes, self.lock = {}, {}, threading.Lock()

    def ensure(self, env_id: str, data_seed: int | None = None) -> str | None:
        key = env_id, data_seed
        with self.lock:
            env_lock = self.locks.setdefault(key, threading.Lock())
        with env_lock:
            if key not in self.outcomes:
                reason = ensure_dataset(self.study, env_id, self.children, data_seed)
                if self.children.stopping:
                    return reason
                self.outcomes[key] = reason
            return self.outcomes[key]


def local_job(study: Study, run: Run, children: Children, datasets: Datasets) -> Outcome:
    needs_data = not run.reevaluates and not study.output(run).is_file()
    try:
        reason = datasets.ensure(run.env_id, run.data_seed) if needs_data else None
        if reason is not None:
            status = "interrupted" if children.stopping else "failed"
            return Outcome(run, status, study.command(run), study.log(run), f"{run.env_id}: {reason}")
        return execute(study, run, children)
    except Exception as e:  # a bug or an unwritable disk: this run fails, the others go on
        return Outcome(run, "failed", study.command(run), study.log(run), f"{e.__class__.__name__}: {e}")


def run_here(study: Study, runs: list[Run], jobs: int) -> tuple[list[Outcome], int | None]:
    """Run the study in this process, `jobs` runs at a time (a thread each, waiting on its subprocess). Returns
    the outcomes and the signal that stopped it (None if it ran to the end)."""
    children = Children()
    datasets = Datasets(study, children)
    progress = Progress(runs, study)
    outcomes, status = [], {}  # status: (env, run name) -> pending / running / done / failed
    pending = [r for r in runs if not study.result(r).is_file()]
    for run in runs:
        status[run.env_id, run.name] = "pending" if run in pending else "done"
    running, stopped_by = {}, None

    def finish(outcome: Outcome, was_running=True):
        outcomes.append(outcome)
        status[outcome.run.env_id, outcome.run.name] = "done" if outcome.status in ("done", "collected") else "failed"
        progress.finished(outcome, was_running)

    def base_state(run: Run) -> str:  # ready / wait / failed, for a re-evaluation's base run
        base = status.get((run.env_id, run.base_name))
        return {"pending": "wait", "running": "wait", "failed": "failed"}.get(base, "ready")

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            while pending or running:
                for run in list(pending):
                    if len(running) >= jobs:
                        break
                    state = base_state(run) if run.reevaluates else "ready"
                    if state == "wait":
                        continue
                    pending.remove(run)
                    if state == "failed":
                        reason = f"its base run {run.env_id}/{run.base_name} failed"
                        finish(Outcome(run, "failed", study.command(run), study.log(run), reason), False)
                        continue
                    status[run.env_id, run.name] = "running"
                    running[pool.submit(local_job, study, run, children, datasets)] = run
                    progress.started()
                if running:
                    done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                    for future in done:
                        running.pop(future)
                        finish(future.result())
        except (KeyboardInterrupt, Interrupted) as e:
            stopped_by = e.args[0] if isinstance(e, Interrupted) else signal.SIGINT
            tqdm.write(f"{signal.Signals(stopped_by).name}: stopping the {len(running)} running runs")
            children.stop()
            for future in running:
                finish(future.result())
    progress.close()
    return outcomes, stopped_by


# ---- the study, through submitit (Slurm, or its local executor) ----
class SubmititRun:
    """One run as a submitit job (the callable of the job array): runs the script (with --resume when its run
    directory has a checkpoint), then writes the result file. On preemption or near its time limit submitit calls
    checkpoint(): the script is stopped (its last checkpoint.pt stays) and the job requeued with the same run."""

    def __init__(self, study: Study):
        self.study = study
        self.children = Children()

    def __call__(self, run: Run) -> dict:
        outcome = execute(self.study, run, self.children)
        return {"status": outcome.status, "reason": outcome.reason, "seconds": outcome.seconds}

    def checkpoint(self, run: Run):
        import submitit

        self.children.stop(grace_s=0)  # SIGTERM now; Children.run reaps it when submitit exits this process
        return submitit.helpers.DelayedSubmission(self, run)

    def __getstate__(self):
        return {"study": self.study}  # not the children: a requeued job starts its own

    def __setstate__(self, state):
        self.__init__(state["study"])


def make_executor(args, study: Study):
    import submitit

    folder = study.runs_dir / "submitit"
    if args.backend == "submitit-local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=args.slurm_time_min)
        return executor
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise SystemExit("error: --backend slurm needs Slurm (sbatch and srun on PATH); use --backend local here")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    parameters = {"timeout_min": args.slurm_time_min, "mem_gb": args.slurm_mem_gb, "cpus_per_task": 1}
    parameters |= {"slurm_array_parallelism": args.jobs, "name": "study"}
    if args.slurm_partition:
        parameters["slurm_partition"] = args.slurm_partition
    executor.update_parameters(**parameters)
    return executor


def run_submitit(study: Study, runs: list[Run], args) -> tuple[list[Outcome], int | None]:
    """The runs without a result as submitit jobs, one per run: one Slurm job array for the training runs, a
    second one for the re-evaluations (starting when the first has ended); the local executor has no limit on
    jobs at once, so there the runs go `--jobs` at a time. Missing datasets are built here first."""
    children = Children()
    progress = Progress(runs, study)
    outcomes, todo, waiting = [], [r for r in runs if not study.result(r).is_file()], []  # waiting: (job, run)

    def finish(outcome: Outcome, was_running=True):
        outcomes.append(outcome)
        progress.finished(outcome, was_running)

    stopped_by = None
    try:
        needed = (r for r in todo if not r.reevaluates and not study.output(r).is_file())
        for env_id, data_seed in dict.fromkeys((r.env_id, r.data_seed) for r in needed):
            reason = ensure_dataset(study, env_id, children, data_seed)
            if reason is not None:
                for run in [r for r in todo if (r.env_id, r.data_seed) == (env_id, data_seed) and not r.reevaluates]:
                    todo.remove(run)
                    finish(Outcome(run, "failed", study.command(run), study.log(run), f"{env_id}: {reason}"), False)
        executor = make_executor(args, study)
        task = SubmititRun(study)
        array_ids = []
        for stage in ([r for r in todo if not r.reevaluates], [r for r in todo if r.reevaluates]):
            if args.backend == "slurm":
                groups = [stage] if stage else []
                if stage and stage[0].reevaluates and array_ids:  # after the training runs, failed or not
                    executor.update_parameters(
                        slurm_additional_parameters={"dependency": "afterany:" + ":".join(array_ids)}
                    )
            else:
                groups = [stage[i : i + args.jobs] for i in range(0, len(stage), args.jobs)]
            for group in groups:
                try:
                    jobs = executor.map_array(task, group)
                except Exception as e:  # e.g. sbatch: no controller, an unknown partition
                    last = (str(e).strip().splitlines() or [e.__class__.__name__])[-1]
                    for run in group:
                        finish(
                            Outcome(run, "failed", study.command(run), study.log(run), f"not submitted: {last}"), False
                        )
                    continue
                waiting += list(zip(jobs, group))
                for _ in group:
                    progress.started()
                if args.backend == "slurm":
                    array_ids += list(dict.fromkeys(str(job.job_id).split("_")[0] for job in jobs))
                    tqdm.write(f"submitted {len(jobs)} runs as Slurm job {array_ids[-1]} (logs: {executor.folder})")
                else:
                    watch(waiting, study, finish, poll_s=1.0)
        watch(waiting, study, finish, poll_s=15.0 if args.backend == "slurm" else 1.0)
    except (KeyboardInterrupt, Interrupted) as e:
        stopped_by = e.args[0] if isinstance(e, Interrupted) else signal.SIGINT
        children.stop()
        if args.backend == "slurm":
            tqdm.write(f"stopped watching; the {len(waiting)} unfinished Slurm jobs go on (scancel stops them)")
        else:
            for job, _ in waiting:
                job.cancel(check=False)
        for _, run in waiting:
            finish(Outcome(run, "interrupted", study.command(run), study.log(run)))
    progress.close()
    return outcomes, stopped_by


def watch(waiting: list, study: Study, finish, poll_s: float) -> None:
    """Wait for the submitted jobs (job, run) in waiting, reporting each as it ends and taking it off the list."""
    while waiting:
        for job, run in [(job, run) for job, run in waiting if job.done()]:
            waiting.remove((job, run))
            try:
                result = job.result()
                outcome = Outcome(run, result["status"], study.command(run), study.log(run),
                                  result["reason"], result["seconds"])  # fmt: skip
            except Exception as e:  # the job itself failed (not the script): submitit's logs say why
                last = (str(e).strip().splitlines() or [e.__class__.__name__])[-1]
                reason = f"submitit job {job.job_id} failed ({last}); see {job.paths.stderr}"
                outcome = Outcome(run, "failed", study.command(run), study.log(run), reason)
            finish(outcome)
        if waiting:
            time.sleep(poll_s)


# ---- the three subcommands ----
def summary(outcomes: list[Outcome], runs: list[Run], study: Study, stopped_by, backend: str) -> int:
    failed = [o for o in outcomes if o.status == "failed"]
    done = sum(study.result(r).is_file() for r in runs)
    print(f"\n{done} of {len(runs)} runs done, {len(failed)} failed", flush=True)
    for o in failed:
        print(f"FAILED {o.run.env_id}/{o.run.name}: {o.reason}")
        print(f"  command: {shlex.join(o.command)}")
        print(f"  log:     {o.log}")
        if o.log.is_file():
            print(f"  error:   {last_error_line(o.log)}")
    if stopped_by is not None:
        left = len(runs) - done - len(failed)
        again = "once its jobs have ended (squeue)" if backend == "slurm" else "to continue"
        print(f"stopped by {signal.Signals(stopped_by).name}: {left} runs not finished (the interrupted ones keep "
              f"their last checkpoint); run the same command again {again}")  # fmt: skip
        return 128 + int(stopped_by)
    return 1 if failed else 0


def run_state(study: Study, run: Run) -> tuple[str, str]:
    """(state, detail): done / finished (result not collected) / partial / not started."""
    run_dir = study.run_dir(run)
    if study.result(run).is_file():
        record = read_json(study.result(run))
        seconds = record.get("wall_seconds")
        took = f", {seconds:.0f} s" if seconds is not None else ""
        return "done", f"step {record['final']['step']}{took}"
    if study.output(run).is_file():
        return "finished", "result not written yet (`run` writes it)"
    if run_dir.is_dir():
        history = read_history(run_dir / "eval_history.jsonl")
        step = history[-1]["step"] if history else None
        checkpoint = "yes" if (run_dir / "checkpoint.pt").is_file() else "no"
        attempts = read_json(run_dir / ATTEMPTS) if (run_dir / ATTEMPTS).is_file() else []
        last_exit = f", last attempt exit {attempts[-1].get('exit')}" if attempts else ""
        return "partial", f"last evaluated step {step}, checkpoint.pt: {checkpoint}{last_exit}"
    return "not started", ""


def print_status(study: Study, runs: list[Run]) -> None:
    rows = [(r.env_id, r.method, str(r.seed), *run_state(study, r)) for r in runs]
    titles = ("env", "method", "seed", "state", "detail")
    widths = [max(len(x) for x in column) for column in zip(titles, *rows)]
    for row in (titles, *rows):
        print("  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip())
    totals = {s: sum(row[3] == s for row in rows) for s in ("done", "finished", "partial", "not started")}
    print(f"\ntotal {len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in totals.items()))


def main(argv=None) -> int:
    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument("--envs", nargs="+", default=["point-robot"], help="env ids (omrl_envs.FAMILIES)")
    selection.add_argument("--methods", nargs="+", default=["main"], help=f"methods and groups {list(GROUPS)}")
    selection.add_argument("--methods-file", help='JSON {name: {"script", "flags", "variant_of"}}: adds/overrides')
    selection.add_argument("--results-dir", default="results", help="<results-dir>/<env>/<method>__s<seed>.json")
    selection.add_argument("--budget", choices=list(BUDGETS), default="quick",
                           help="training steps per env: quick (the scripts' cpu presets) or long (BUDGETS; results "
                                "in <results-dir>/long/, runs in <runs-dir>/long/)")  # fmt: skip
    runs = argparse.ArgumentParser(add_help=False)
    runs.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    runs.add_argument("--runs-dir", default="runs/study", help="<runs-dir>/<env>/<method>__s<seed>/ and .log")
    runs.add_argument("--data-seeds", nargs="+", type=int, default=None,
                      help="train on the datasets of these collection seeds (collect_sac.py --seed K), each at "
                           "<data-dir>/data-seed-K/<env>/ (K = 0: <data-dir>/<env>/); runs are named "
                           "<method>__d<K>__s<seed>")  # fmt: skip
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", parents=[selection, runs], help="run what is not done (resumable)")
    run.add_argument("--jobs", type=int, default=2, help="runs at once (each single-threaded); Slurm: array limit")
    run.add_argument("--data-dir", default="data", help="datasets, <data-dir>/<env>/; a missing one is built")
    run.add_argument("--flags", default="", help='appended to every run\'s command, e.g. --flags="--eval-runs 1"')
    run.add_argument("--collect-flags", default="", help="appended to collect_sac.py's command (missing datasets)")
    run.add_argument("--backend", choices=("local", "slurm", "submitit-local"), default="local")
    run.add_argument("--slurm-partition", help="Slurm partition (default: the cluster's)")
    run.add_argument("--slurm-time-min", type=int, default=180, help="time limit per job; then requeued, resumed")
    run.add_argument("--slurm-mem-gb", type=float, default=4)
    commands.add_parser("status", parents=[selection, runs], help="what is done, partial, not started")
    collect = commands.add_parser(
        "collect", parents=[selection, runs], help="write the result files of finished runs, start nothing"
    )
    collect.add_argument("--data-dir", default="data", help="the datasets the runs used (recorded in the command)")
    commands.add_parser("table", parents=[selection], help="Markdown tables (plot_results.results_tables)")
    args = parser.parse_args(argv)

    sys.path.append(str(ROOT))  # appended: the standard library's `select` stays first
    import omrl_envs

    unknown = [e for e in args.envs if e not in omrl_envs.FAMILIES]
    if unknown:
        parser.error(f"unknown env ids {unknown}; known: {', '.join(omrl_envs.FAMILIES)}")
    methods = load_methods(args.methods_file)
    method_names = expand_methods(args.methods, methods)
    outside = [e for e in args.envs if args.budget != "quick" and e not in BUDGETS[args.budget]]
    if outside:
        parser.error(f"--budget {args.budget} has no steps for {', '.join(outside)}; it covers "
                     f"{', '.join(BUDGETS[args.budget])}")  # fmt: skip
    folder = () if args.budget == "quick" else (args.budget,)  # a budget's own results and runs folders
    results_dir = Path(args.results_dir).resolve().joinpath(*folder)
    runs_dir = Path(getattr(args, "runs_dir", ".")).resolve().joinpath(*folder)
    if args.command == "table":
        import plot_results

        print(plot_results.results_tables(results_dir, args.envs, method_names))
        return 0
    if args.data_seeds is not None and min(args.data_seeds) < 0:
        parser.error("--data-seeds must be collection seeds, 0 or more")
    data_seeds = tuple(dict.fromkeys(args.data_seeds)) if args.data_seeds is not None else (None,)
    selected = plan(args.envs, method_names, args.seeds, methods, data_seeds)
    if args.command == "status":
        print_status(Study(runs_dir, results_dir, Path(), budget=args.budget), selected)
        return 0
    if args.command == "collect":  # runs started by hand or elsewhere: their results, nothing is run
        study = Study(runs_dir, results_dir, Path(args.data_dir).resolve(), budget=args.budget)
        finished = [r for r in selected if not study.result(r).is_file() and study.output(r).is_file()]
        for run in finished:
            write_json_atomic(study.result(run), result_record(run, study.run_dir(run), study.command(run)))
            print(f"wrote {study.result(run)}")
        print(f"{len(finished)} result file(s) written")
        return 0
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    missing = sorted({r.script for r in selected if not (ROOT / r.script).is_file()})
    if missing:
        parser.error(f"no such script: {', '.join(missing)}")
    study = Study(runs_dir, results_dir, Path(args.data_dir).resolve(), tuple(shlex.split(args.flags)),
                  tuple(shlex.split(args.collect_flags)), args.budget)  # fmt: skip
    signal.signal(signal.SIGTERM, raise_interrupted)  # as Ctrl-C: stop the children, summary, non-zero exit
    if args.backend == "local":
        outcomes, stopped_by = run_here(study, selected, args.jobs)
    else:
        outcomes, stopped_by = run_submitit(study, selected, args)
    return summary(outcomes, selected, study, stopped_by, args.backend)


if __name__ == "__main__":
    sys.exit(main())
