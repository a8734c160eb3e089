"""Copy select.py's marked shared blocks into every baselines/*.py, replacing their copies (maintainers' tool).

After editing a `# ---- SHARED BLOCK: <name> ...` block in select.py, run `python tools/sync_shared_blocks.py`;
tests/test_select.py::test_shared_blocks_are_identical_across_scripts fails until the copies match.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = re.compile(r"^[ \t]*# ---- SHARED BLOCK: (.+?) \(", flags=re.M)


def blocks(text: str) -> dict:
    """{name: (start, end)} of each marked block, end at its END marker."""
    found = {}
    for match in START.finditer(text):
        end = text.index(f"# ---- END SHARED BLOCK: {match.group(1)} ----", match.start())
        found[match.group(1)] = (match.start(), end)
    return found


if __name__ == "__main__":
    source = (ROOT / "select.py").read_text()
    ours = {name: source[a:b] for name, (a, b) in blocks(source).items()}
    for path in sorted((ROOT / "baselines").glob("*.py")):
        text = path.read_text()
        for name, (a, b) in sorted(blocks(text).items(), key=lambda item: -item[1][0]):  # last first: offsets hold
            text = text[:a] + ours[name] + text[b:]
        if text != path.read_text():
            path.write_text(text)
            print(f"updated {path.relative_to(ROOT)}")
