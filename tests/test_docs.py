"""The README and the docs site (docs/, mkdocs.yml): the README stays short, every section of the long README it
replaced is still a heading somewhere, no page cites internal tracker numbers or work sittings, every relative link
and image points to a file that exists (and, into a Markdown page, to a heading that exists), every generated
results block is whole and unique, and, when mkdocs is installed, `mkdocs build --strict` passes and the built
pages show the figures."""

import re
import unicodedata
from pathlib import Path

import pytest
from conftest import ROOT, run_script

# The headings of the README before it was split into the docs site (one README of 1,490 lines), in its order.
OLD_README_HEADINGS = [
    "SELECT: offline meta-RL with weighted policy constraints and proximal context collection",
    "Set up and run",
    "The task families (`omrl_envs.py`)",
    "Differences from the reference simulators",
    "Env speed (`python benchmarks/bench_envs.py`)",
    "The dataset format",
    "Offline datasets: `collect_sac.py`",
    "Presets",
    "Measured here (2-core VM shared with other jobs: load averages 2.5 to 11 during these runs)",
    "Resume and overwrite",
    "Same seed, same dataset",
    "SELECT: `select.py`",
    "What is in the file (top to bottom)",
    "Per-env defaults: `--preset` (`PRESETS`) and `ENV_DEFAULTS` in `select.py`",
    "Logging keys (TensorBoard)",
    "Run record: `runs/{env_id}__{exp_name}__{seed}__{unix time}/` (or `--runs-dir`/`--run-name`)",
    "Speed and memory (this 2-core CPU)",
    "Loading a dataset: peak memory (`python benchmarks/bench_load.py --size-gb 2`)",
    "Results",
    "Baselines: `baselines/csro.py`, `focal.py`, `offpearl.py`, `corro.py`, `borel.py`",
    "Studies: `benchmarks/study.py`, `results/`, `plot_results.py`",
    "Results on Point-Robot",
    "Results on the MuJoCo families",
    "cheetah-vel",
    "ant-goal",
    "humanoid-dir",
    "hopper-rand-params",
    "walker-rand-params",
    "Comparison fidelity on a MuJoCo family",
    "`select.py` and the standard library's `select`",
]
README_MAX_LINES = 250
INTERNAL_REFERENCE = re.compile(r"\b(issue|issues) \d+|\bsession\b|\bsessions\b|\bsitting", re.IGNORECASE)
FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
MARKER = re.compile(r"^<!-- (/?)results:([\w./-]+) -->$", re.MULTILINE)


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def prose_lines(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks, inline code removed."""
    lines, in_fence = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(line)
    return lines


def headings(path: Path) -> list[str]:
    return [m.group(1).strip() for line in prose_lines(path) if (m := re.match(r"#{1,6} (.+)$", line))]


def slug(heading: str) -> str:
    """The anchor that mkdocs (Python-Markdown's toc) and GitHub give a heading of plain text and inline code."""
    text = unicodedata.normalize("NFKD", heading.replace("`", "")).encode("ascii", "ignore").decode()
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def links(path: Path) -> list[str]:
    text = "\n".join(re.sub(r"`[^`]*`", "", line) for line in prose_lines(path))
    return LINK.findall(text)


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines, at most {README_MAX_LINES}"


def test_every_old_readme_heading_is_a_heading_on_some_page():
    found = {h for path in markdown_files() for h in headings(path)}
    missing = [h for h in OLD_README_HEADINGS if h not in found]
    assert not missing, f"headings of the old README found on no page (README.md, docs/**/*.md): {missing}"


def test_no_internal_references():
    hits = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in markdown_files()
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if INTERNAL_REFERENCE.search(line)
    ]
    assert not hits, (
        "tracker numbers or work sittings cited (name the measurement, page, date or machine):\n" + "\n".join(hits)
    )


def test_relative_links_and_images_exist():
    broken = []
    for path in markdown_files():
        for target in links(path):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif ROOT not in dest.parents and dest != ROOT:
                broken.append(f"{where} (outside the repository)")
            elif anchor and dest.suffix == ".md" and anchor not in {slug(h) for h in headings(dest)}:
                broken.append(f"{where} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_links_to_every_written_docs_page():
    """Every page of the site but the generated tables (tables.md) is linked from the README."""
    linked = {t.partition("#")[0] for t in links(ROOT / "README.md")}
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md") if p.name != "tables.md"}
    assert not pages - linked, f"docs pages the README does not link to: {sorted(pages - linked)}"


def test_results_blocks_are_whole_and_unique():
    """Each generated block (`<!-- results:NAME -->` ... `<!-- /results:NAME -->`) opens once in all the pages
    together, closes after it opens, in the same file; the README has the summary block."""
    opened: dict[str, str] = {}
    for path in markdown_files():
        stack = []
        for closing, name in MARKER.findall(path.read_text(encoding="utf-8")):
            where = path.relative_to(ROOT).as_posix()
            if not closing:
                assert name not in opened, f"block {name} opens in {opened[name]} and in {where}"
                assert not stack, f"{where}: block {name} opens inside block {stack[-1]}"
                opened[name] = where
                stack.append(name)
            else:
                assert stack == [name], f"{where}: /results:{name} closes no open block"
                stack.pop()
        assert not stack, f"{path.relative_to(ROOT)}: block {stack} never closes"
    assert opened.get("summary") == "README.md"


def test_mkdocs_build_strict(tmp_path):
    """The site builds with every warning an error (broken links and anchors, pages missing from the nav), and the
    built pages' figures point to images that were copied into the site."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    site = tmp_path / "site"
    run_script("-m", "mkdocs", "build", "--strict", "--site-dir", site, timeout=300, env={"NO_MKDOCS_2_WARNING": "1"})
    for page in ["index.html", "results/cheetah-vel/index.html", "fidelity/index.html"]:
        html = (site / page).read_text(encoding="utf-8")
        images = re.findall(r'<img[^>]* src="([^"]+\.png)"', html)
        assert images, f"{page} shows no figure"
        for src in images:
            assert ((site / page).parent / src).resolve().is_file(), f"{page}: {src} is not in the site"
