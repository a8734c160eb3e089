"""Take the machine's paths out of result files written before the study runner did so itself (maintainers' tool).

    python tools/portable_results.py results                 # every results/**/*.json, in place
    python tools/portable_results.py --root /old/checkout results

A result file records the command and the options of its run; the runner now writes them with paths relative to the
repository root and `python` for the interpreter (benchmarks/study.py, `portable`). This rewrites older files the same
way: a path inside --root (default: this checkout) becomes relative to it, the recorded interpreter becomes `python`.
Only strings change; every number is written back as it was read.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from study import portable, write_json_atomic  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="folders of result files (searched recursively)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout the runs ran in (default: this one)")
    args = parser.parse_args()
    changed = 0
    for path in sorted(p for folder in args.folders for p in folder.rglob("*.json")):
        record = json.loads(path.read_text())
        command = record.get("command") or [""]
        python = command[0] if Path(command[0]).name.startswith("python") else sys.executable
        new = portable(record, args.root, python)
        if new != record:
            write_json_atomic(path, new)
            changed += 1
    print(f"{changed} result file(s) rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
