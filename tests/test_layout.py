"""Everything a user runs from the repository root works, although `select.py` shares its name with the
standard-library module `select` (see select/__init__.py and docs/get-started.md)."""

import json
import shutil
import sys
import uuid

import pytest
from conftest import ROOT, run_script

BASELINES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "baselines").glob("*.py") if p.name != "__init__.py")
REAL_SELECT = "lib-dynload" if "select" not in sys.builtin_module_names else "built-in"


@pytest.mark.parametrize("script", ["select.py", "collect_sac.py", "plot_results.py", *BASELINES])
def test_script_help(script):
    if not (ROOT / script).exists():
        pytest.skip(f"{script} not written yet")
    out = run_script(script, "--help", timeout=120).stdout
    assert "--env-id" in out or "--runs-dir" in out


def test_baseline_style_script_in_subfolder(tmp_path):
    """A script in baselines/ imports the registry from the root the way baselines/*.py do, and still gets the
    standard library's select (checked on a copy of the root, so it runs before any baseline exists)."""
    shutil.copytree(ROOT / "select", tmp_path / "select")
    shutil.copy(ROOT / "omrl_envs.py", tmp_path)
    if (ROOT / "select.py").exists():
        shutil.copy(ROOT / "select.py", tmp_path)
    (tmp_path / "baselines").mkdir()
    (tmp_path / "baselines" / "probe.py").write_text(
        "import sys\nfrom pathlib import Path\n"
        "sys.path.append(str(Path(__file__).resolve().parents[1]))\n"
        "import subprocess\nimport omrl_envs\nimport select\n"
        "subprocess.run(['true'], check=True)\n"
        "print(select.__spec__.origin, omrl_envs.NUM_TASKS)\n"
    )
    out = run_script("baselines/probe.py", cwd=tmp_path).stdout
    assert REAL_SELECT in out and out.strip().endswith("40")


@pytest.mark.parametrize(
    "args",
    [
        ["-m", "pip", "--version"],
        ["-c", "import subprocess; subprocess.run(['true'], check=True)"],
        ["-c", "import select; print(select.__spec__.origin)"],
        ["-m", "pytest", "--version"],
        ["-c", "import asyncio; asyncio.run(asyncio.sleep(0))"],
    ],
)
def test_commands_from_root(args):
    proc = run_script(*args, timeout=120)
    if "select.__spec__" in args[-1]:
        assert REAL_SELECT in proc.stdout


def test_pytest_collects_from_root():
    """The README's test command, `python -m pytest`, finds the suite from the root (collection only)."""
    out = run_script("-m", "pytest", "--collect-only", "-q", "tests/test_dataset.py", timeout=120).stdout
    assert "test_round_trip" in out


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_multiprocessing_child_from_root(method):
    probe = ROOT / f"_probe_{uuid.uuid4().hex[:8]}.py"
    probe.write_text(
        "import json, multiprocessing, select, sys\n"
        "def child(_):\n"
        "    import select, subprocess\n"
        "    subprocess.run(['true'], check=True)\n"
        "    return select.__spec__.origin\n"
        "if __name__ == '__main__':\n"
        f"    with multiprocessing.get_context('{method}').Pool(1) as pool:\n"
        "        print(json.dumps([select.__spec__.origin, *pool.map(child, [0, 1])]))\n"
    )
    try:
        origins = json.loads(run_script(probe.name, timeout=120).stdout)
    finally:
        probe.unlink()
    assert len(origins) == 3 and all(REAL_SELECT in o for o in origins)


def test_select_script_keeps_its_name():
    """`python select.py` runs our script as __main__, and its own imports still get the real select module."""
    if not (ROOT / "select.py").exists():
        pytest.skip("select.py not written yet")
    code = (
        "import runpy, sys; sys.argv = ['select.py', '--help']\n"
        "try:\n    runpy.run_path('select.py', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "import select; print('real', select.__spec__.origin)"
    )
    assert REAL_SELECT in run_script("-c", code, timeout=120).stdout.splitlines()[-1]
