"""Changed-line counts between the method files, for the diff table of docs/baselines.md.

    python tools/diff_lines.py

For each pair it runs `diff A B` and prints the lines only in A and only in B (its `<` and `>` lines; their sum is
`diff A B | grep -c '^[<>]'`) and the changed lines with a modified line counted once (each hunk's longer side).
"""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [
    ("baselines/csro.py", "select.py"),
    ("baselines/focal.py", "select.py"),
    ("baselines/offpearl.py", "select.py"),
    ("baselines/focal.py", "baselines/csro.py"),
    ("baselines/offpearl.py", "baselines/csro.py"),
    ("baselines/corro.py", "baselines/csro.py"),
    ("baselines/borel.py", "baselines/csro.py"),
]


def changed_lines(first: str, second: str) -> tuple[int, int, int]:
    """(lines only in first, lines only in second, changed lines counting each hunk's longer side), from diff(1)."""
    out = subprocess.run(["diff", first, second], cwd=ROOT, capture_output=True, text=True).stdout
    only_a = only_b = once = 0
    for start_a, end_a, kind, start_b, end_b in re.findall(r"^(\d+)(?:,(\d+))?([acd])(\d+)(?:,(\d+))?$", out, re.M):
        a = 0 if kind == "a" else int(end_a or start_a) - int(start_a) + 1  # "a": lines added after line start_a
        b = 0 if kind == "d" else int(end_b or start_b) - int(start_b) + 1
        only_a, only_b, once = only_a + a, only_b + b, once + max(a, b)
    return only_a, only_b, once


def table() -> str:
    """The docs' markdown table."""
    rows = ["| diff | only in A | only in B | both (`diff A B \\| grep -c '^[<>]'`) | a modified line counted once |"]
    rows.append("|---|---|---|---|---|")
    for first, second in PAIRS:
        only_a, only_b, once = changed_lines(first, second)
        rows.append(f"| `{first}` vs `{second}` | {only_a} | {only_b} | {only_a + only_b} | {once} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
