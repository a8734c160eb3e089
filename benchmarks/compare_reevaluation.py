"""Re-evaluate checkpoints with this checkout and with another git commit: the time each takes and how far their
numbers are apart. For a change to the shared meta-test that must not change what it measures (e.g. z kept as
running sums instead of re-encoding the whole context at every inference).

    python benchmarks/compare_reevaluation.py --against 441d46d runs/study/hopper-rand-params/*/checkpoint.pt
    python benchmarks/compare_reevaluation.py --against HEAD~1 --repeats 2 --protocols offline <checkpoint.pt> ...

The other commit is checked out into a temporary git worktree (removed afterwards); each checkpoint is re-evaluated
there and here (`<script> --eval-checkpoint`, one thread, the two alternating `--repeats` times), and the script's
own `--eval-output` JSON of each is compared: every protocol's return and every scored episode's return (per_run),
and the context-shift ratio. Prints one row per checkpoint and protocol, the median seconds of each side, and the
largest difference of all.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def script_of(checkpoint: Path) -> tuple[str, Path]:
    """The training script that wrote a checkpoint (select.py, or baselines/<exp_name>.py) and its dataset folder, a
    relative one taken from this checkout (both sides read the same data: none is built in the other checkout)."""
    args = torch.load(checkpoint, map_location="cpu", weights_only=False)["args"]
    script = "select.py" if args["exp_name"] == "select" else f"baselines/{args['exp_name']}.py"
    return script, (ROOT / args["data_dir"]).resolve()


ARGS_FIELDS = """import dataclasses, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("script", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps([f.name for f in dataclasses.fields(module.Args)]))"""


def for_checkout(checkout: Path, script: str, checkpoint: Path, folder: Path) -> Path:
    """The checkpoint as `checkout`'s script can read it: a copy without the options its Args does not have (added
    since), or the checkpoint itself."""
    proc = subprocess.run([sys.executable, "-c", ARGS_FIELDS, script], cwd=checkout, capture_output=True, text=True,
                          env={**os.environ, **CHILD_ENV}, check=True)  # fmt: skip
    fields = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if set(saved["args"]) <= fields:
        return checkpoint
    saved["args"] = {k: v for k, v in saved["args"].items() if k in fields}
    copy = folder / f"{checkpoint.parent.name}.pt"
    torch.save(saved, copy)
    return copy


def reevaluate(checkout: Path, script: str, checkpoint: Path, data_dir: Path, output: Path, protocols) -> float:
    """Seconds of one `--eval-checkpoint` in `checkout` (the whole process: loading the data, the protocols)."""
    command = [sys.executable, script, "--eval-checkpoint", str(checkpoint), "--eval-output", str(output)]
    command += ["--data-dir", str(data_dir)]
    command += ["--protocols", *protocols] if protocols else []
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=checkout, capture_output=True, text=True, env={**os.environ, **CHILD_ENV})
    if proc.returncode != 0:
        sys.exit(f"error: {checkout}: {' '.join(command)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def differences(old: dict, new: dict) -> dict:
    """Per protocol: both returns, the largest |difference| of the scored episodes' returns and of the shift."""
    rows = {}
    for protocol, a in old["protocols"].items():
        b = new["protocols"][protocol]
        runs_a, runs_b = [np.asarray(r) for r in a["per_run"]], [np.asarray(r) for r in b["per_run"]]
        if [len(r) for r in runs_a] != [len(r) for r in runs_b]:  # an episode that ended at another step
            per_run = float("inf")
        else:
            per_run = max(float(np.abs(x - y).max()) for x, y in zip(runs_a, runs_b))
        rows[protocol] = {
            "old": a["return"],
            "new": b["return"],
            "return": abs(a["return"] - b["return"]),
            "per_run": per_run,
            "shift": abs(a["context_shift"] - b["context_shift"]),
        }
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint.pt files of finished or partial runs")
    parser.add_argument("--against", required=True, help="the git commit (or ref) to compare this checkout with")
    parser.add_argument("--repeats", type=int, default=1, help="re-evaluations per side, alternating (timing)")
    parser.add_argument("--protocols", nargs="+", help="only these protocols (default: the checkpoint's)")
    args = parser.parse_args()
    missing = [str(c) for c in args.checkpoints if not c.is_file()]
    if missing:
        parser.error(f"no such checkpoint: {', '.join(missing)}")
    worst = {"return": 0.0, "per_run": 0.0, "shift": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        old_checkout = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(old_checkout), args.against], cwd=ROOT,
                       check=True)  # fmt: skip
        try:
            print("checkpoint | script | protocol | old return | new return | max |d| per episode | |d| shift")
            for checkpoint in args.checkpoints:
                checkpoint = checkpoint.resolve()
                (script, data_dir), seconds = script_of(checkpoint), {"old": [], "new": []}
                readable = {"old": for_checkout(old_checkout, script, checkpoint, Path(tmp)), "new": checkpoint}
                for _ in range(args.repeats):
                    for side, checkout in (("old", old_checkout), ("new", ROOT)):
                        output = Path(tmp) / f"{side}.json"
                        seconds[side].append(
                            reevaluate(checkout, script, readable[side], data_dir, output, args.protocols)
                        )
                rows = differences(json.loads((Path(tmp) / "old.json").read_text()),
                                   json.loads((Path(tmp) / "new.json").read_text()))  # fmt: skip
                name = f"{checkpoint.parent.parent.name}/{checkpoint.parent.name}"
                for protocol, d in rows.items():
                    print(f"{name} | {script} | {protocol} | {d['old']:.6f} | {d['new']:.6f} | {d['per_run']:.3g}"
                          f" | {d['shift']:.3g}")  # fmt: skip
                    worst = {k: max(v, d[k]) for k, v in worst.items()}
                old_s, new_s = np.median(seconds["old"]), np.median(seconds["new"])
                print(f"{name}: re-evaluation {old_s:.1f} s before, {new_s:.1f} s now (x{old_s / new_s:.2f} faster;"
                      f" median of {args.repeats})", flush=True)  # fmt: skip
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_checkout)], cwd=ROOT, check=False)
    print(f"largest difference: return {worst['return']:.3g}, one scored episode's return {worst['per_run']:.3g},"
          f" context shift {worst['shift']:.3g}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
