"""plot_results.py: tables checked against numbers computed here, rliable's bootstrap on known cases, the README
blocks, the figures; result files written here, TensorBoard run directories, and one tiny real select.py run."""

import json
import re
import sys

import numpy as np
import pytest
from conftest import ROOT, load_script, run_script
from torch.utils.tensorboard import SummaryWriter

pr = load_script("plot_results.py", "plot_results")
RLIABLE, RLIABLE_ERROR = pr.load_rliable()
needs_rliable = pytest.mark.skipif(RLIABLE is None, reason=f"rliable is not importable: {RLIABLE_ERROR}")
TASKS = [str(t) for t in range(2, 40, 4)]  # the 10 test tasks of every family
PATTERN = np.linspace(-1.0, 1.0, len(TASKS))  # per-task spread around a run's return (mean 0)
ALL = list(pr.PROTOCOLS)


def write_result(results_dir, method, seed, returns, *, steps=(1000, 2000), shift=0.1, planned=None, per_task=None,
                 variant_of=None, reevaluates=None, env_id="point-robot", data_seed=None, dataset="point-robot",
                 machine="test", curve=None):  # fmt: skip
    """A schema-1 result file whose final return is `returns[protocol]` (per-task scores: that + PATTERN, or
    `per_task`); its curve rises by 1 per evaluation to the final value; context shift `shift` everywhere."""
    steps = [] if reevaluates else list(steps)
    protocols = {
        p: {
            "return": r,
            "per_task": dict(zip(TASKS, per_task[p] if per_task else r + PATTERN)),
            "per_round": [r],
            "per_round_runs": [2],
            "context_shift": shift,
            "context_shift_per_task": dict.fromkeys(TASKS, shift),
            "exploration_transitions_min": None,
        }
        for p, r in returns.items()
    }
    record = {
        "schema": 1, "env_id": env_id, "method": method, "variant_of": variant_of, "reevaluates": reevaluates,
        "script": "select.py", "flags": [], "study_flags": [], "seed": seed, "command": "python select.py",
        "args": {"num_train_steps": planned or (steps[-1] if steps else 2000)}, "preset": "default", "code": "abc",
        "dataset": dataset, "wall_seconds": 1.0, "threads": 1, "device": "cpu", "machine": machine,
        "data_seed": data_seed,
        "final": {"step": steps[-1] if steps else 2000, "protocols": protocols},
        "curve": {
            "steps": steps,
            "return": {p: list(curve[p]) if curve else [r - (len(steps) - 1 - i) for i in range(len(steps))]
                       for p, r in returns.items()},
            "context_shift": {p: [shift] * len(steps) for p in returns},
        },
    }  # fmt: skip
    path = results_dir / env_id / f"{method}{'' if data_seed is None else f'__d{data_seed}'}__s{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def row(tables: str, first_cell: str) -> str:
    return next(line for line in tables.splitlines() if line.startswith(f"| {first_cell} |"))


def mean_std(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.2f}"


def expected_cell(finals, shift, best=None) -> str:
    return f"{mean_std(finals)} [{shift:.2f}]" + (f" (best {best:.2f})" if best is not None else "")


SELECT = {1: -4.0, 2: -5.0, 3: -6.5}  # final return of every protocol, per seed


def write_select(results_dir, **kwargs):
    for seed, r in SELECT.items():
        write_result(results_dir, "select", seed, {p: r - i for i, p in enumerate(ALL)}, **kwargs)


# ------------------------------------------------------------------------------------------------
# Tables on result files
# ------------------------------------------------------------------------------------------------
def test_final_table_ablations_and_reevaluations(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rliable", None)  # this test is about tables (1), (3), (4)
    results = tmp_path / "results"
    write_select(results)
    alone = pr.results_tables(results)
    for seed, r in ((1, -10.0), (2, -11.0)):
        write_result(results, "csro", seed, {p: r for p in ALL}, shift=0.5)
    for seed, r in SELECT.items():  # an ablation that trained half as long, much worse
        write_result(results, "club-0", seed, {"offline": r - 20, "online-prior": r - 30}, steps=(1000,), shift=0.8,
                     variant_of="select")  # fmt: skip
        write_result(results, "select-sigma0.1", seed, {"online-proximal": r + 1}, shift=0.1 * seed,
                     reevaluates=f"select__s{seed}")  # fmt: skip
    tables = pr.results_tables(results)

    # (1) one row per base method: mean ± sample std over seeds [context shift] (best of the seed-mean curve)
    finals = np.array(list(SELECT.values()))
    cells = [expected_cell(finals - i, 0.1, best=(finals - i).mean()) for i in range(4)]
    assert row(tables, "select") == "| select | 3 | 2,000 | " + " | ".join(cells) + " |"
    assert (
        row(tables, "csro") == "| csro | 2 | 2,000 | " + " | ".join([expected_cell([-10, -11], 0.5, -10.5)] * 4) + " |"
    )
    # an ablation or a re-evaluation never changes its base method's row nor gets one in table (1)
    assert row(alone, "select") == row(tables, "select")
    methods_table = tables.split("SELECT against each baseline")[0]
    assert "club-0" not in methods_table and "sigma" not in methods_table
    assert tables.index("| select |") < tables.index("| csro |")  # fixed order, not alphabetical

    # (3) the ablation below select's evaluation at the ablation's final step (1,000: select's curve is 1 lower)
    base_cells = [expected_cell(finals - i - 1, 0.1) for i in range(4)]
    assert row(tables, "select (base)") == "| select (base) |  | 1,000 | 3 | " + " | ".join(base_cells) + " |"
    ablation_cells = [expected_cell(finals - 20, 0.8), expected_cell(finals - 30, 0.8), "–", "–"]
    assert row(tables, "club-0") == "| club-0 | select | 1,000 | 3 | " + " | ".join(ablation_cells) + " |"

    # (4) the re-evaluation beside the final evaluation of the same seeds
    shifts = np.array([0.1, 0.2, 0.3])
    expected = ["select-sigma0.1", "select", "online-proximal", "3", mean_std(finals + 1), mean_std(shifts),
                mean_std(finals - 3), "0.10 ± 0.00"]  # fmt: skip
    assert row(tables, "select-sigma0.1") == "| " + " | ".join(expected) + " |"
    assert "Notes:" not in tables  # every seed reached its planned step

    # filters: env ids and methods (rows), the base methods still looked up
    only = pr.results_tables(results, env_ids=["point-robot"], methods=["club-0"])
    only, cost = only.split("Cost per run")
    assert [line.split(" | ")[0] for line in only.splitlines() if line.startswith("| ")][1:] == [
        "| select (base)",
        "| club-0",
    ]
    assert [line.split(" | ")[0] for line in cost.splitlines() if line.startswith("| ")][1:] == ["| club-0"]
    with pytest.raises(pr.InputError, match="no results for ant-dir"):
        pr.results_tables(results, env_ids=["ant-dir"])
    offline_only = pr.results_tables(results, protocols=("offline",))
    assert row(offline_only, "select") == f"| select | 3 | 2,000 | {cells[0]} |"


def test_seeds_that_stopped_early_are_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rliable", None)
    results = tmp_path / "results"
    write_select(results, steps=(1000, 2000, 3000))
    write_result(results, "select", 4, {p: -20.0 for p in ALL}, steps=(1000, 2000), planned=3000)
    tables = pr.results_tables(results)
    assert (
        "- select: seed 4 stopped at 2,000 of 3,000 gradient steps; the tables use each seed's own final evaluation,"
        " and select's curves are averaged over the steps that every seed has (up to step 2,000)." in tables
    )
    finals = [*SELECT.values(), -20.0]  # seed 4's final evaluation is in, not cut
    assert row(tables, "select").startswith(f"| select | 4 | 3,000 | {expected_cell(finals, 0.1)} (best ")
    steps, values = pr.mean_curve(pr.group_runs(pr.load_runs(results))["point-robot"]["select"], "offline")
    assert steps.tolist() == [1000, 2000] and values.shape == (4, 2)


# ------------------------------------------------------------------------------------------------
# SELECT against the baselines: rliable
# ------------------------------------------------------------------------------------------------
def test_mujoco_anchors_are_the_datasets_first_and_last_checkpoint(tmp_path, monkeypatch):
    """Without benchmark.md anchors (the MuJoCo families), the table lists and the figure draws the dataset's range
    as the result files recorded it: the test-task return at its first and its last kept checkpoint."""
    monkeypatch.setitem(sys.modules, "rliable", None)
    path = write_result(tmp_path, "select", 1, dict.fromkeys(ALL, -90.0), env_id="cheetah-vel")
    record = json.loads(path.read_text())
    quality = {"steps": [5, 10, 15], "test_tasks": [-414, -2, -85]}
    record["dataset"] = {"content_hash": "abc", "checkpoint_returns": quality}
    path.write_text(json.dumps(record))
    tables = pr.results_tables(tmp_path)
    assert "Reference returns: dataset, first checkpoint -414.00, dataset, last checkpoint -85.00." in tables
    assert pr.env_anchors("cheetah-vel", {"select": pr.load_runs(tmp_path)}) == {
        "dataset, first checkpoint": -414, "dataset, last checkpoint": -85}  # fmt: skip
    other = write_result(tmp_path, "select", 2, dict.fromkeys(ALL, -80.0), env_id="cheetah-vel")
    second = json.loads(other.read_text())  # seed 2 on another dataset: both ranges, each named by its hash
    second["dataset"] = {"content_hash": "def", "checkpoint_returns": {"steps": [5, 10], "test_tasks": [-400, -70]}}
    other.write_text(json.dumps(second))
    assert pr.env_anchors("cheetah-vel", {"select": pr.load_runs(tmp_path)}) == {
        "dataset abc..., first checkpoint": -414, "dataset abc..., last checkpoint": -85,
        "dataset def..., first checkpoint": -400, "dataset def..., last checkpoint": -70}  # fmt: skip
    other.unlink()
    record["dataset"] = {"content_hash": "abc", "checkpoint_returns": None}  # a dataset without a collection log
    path.write_text(json.dumps(record))
    assert "Reference returns" not in pr.results_tables(tmp_path)
    assert pr.env_anchors("point-robot", {}) == pr.ANCHORS["point-robot"]


def test_a_seed_on_two_datasets_is_named(tmp_path, monkeypatch):
    """The methods of one seed must share a dataset; where their content hashes differ, a note says so (a seed may
    use another dataset than the other seeds: a rebuild on another kind of CPU gives other data)."""
    monkeypatch.setitem(sys.modules, "rliable", None)
    hashes = {("select", 1): "a" * 64, ("csro", 1): "a" * 64, ("select", 2): "b" * 64, ("csro", 2): "c" * 64}
    for (method, seed), content_hash in hashes.items():
        path = write_result(tmp_path, method, seed, dict.fromkeys(ALL, -5.0))
        record = json.loads(path.read_text())
        path.write_text(json.dumps(record | {"dataset": {"content_hash": content_hash}}))
    tables = pr.results_tables(tmp_path)
    assert "- seed 2 ran on 2 different datasets: `bbbbbbbbbbbb...` (select); `cccccccccccc...` (csro)" in tables
    assert "seed 1 ran on" not in tables


def test_pretraining_steps_come_before_the_rl_steps(tmp_path, monkeypatch):
    """CORRO and BOReL count their pre-training in their steps (their RL steps are the others'): their curves and
    training traces are keyed by RL step, so that they line up with the other methods', and the tables show both."""
    monkeypatch.setitem(sys.modules, "rliable", None)
    write_select(tmp_path)
    for seed in (1, 2):
        path = write_result(tmp_path, "borel", seed, dict.fromkeys(ALL, -7.0), steps=(2500, 3500))
        record = json.loads(path.read_text())
        record["args"] |= {"vae_steps": 1500}
        record["training"] = {"losses/vae_kl_loss": {"steps": [500, 1500, 2000], "values": [1.0, 2.0, 3.0]}}
        path.write_text(json.dumps(record))
    runs = {run.method: run for run in pr.load_runs(tmp_path) if run.seed == 1}
    assert runs["borel"].pretraining == 1500 and runs["select"].pretraining == 0
    assert sorted(runs["borel"].curve["offline"]) == [1000, 2000] == sorted(runs["select"].curve["offline"])
    assert runs["borel"].training["losses/vae_kl_loss"] == {-1000: 1.0, 0: 2.0, 500: 3.0}
    assert runs["borel"].step == 3500  # the run's own count, every step
    assert pr.steps_label([runs["borel"]]) == "2,000 + 1,500 pre-training"
    assert pr.steps_label([runs["select"]]) == "2,000"
    assert row(pr.results_tables(tmp_path), "borel").startswith("| borel | 2 | 2,000 + 1,500 pre-training | -7.00")
    assert pr.pretraining_steps({"generative_steps": 1000, "encoder_steps": 10_000}) == 11_000  # CORRO's


def test_mean_std_cells():
    assert pr.mean_std([1.0, 3.0]) == "2.00 ± 1.41"  # sample std (ddof 1): sqrt(2)
    assert pr.mean_std([-4.4]) == "-4.40 ± –"  # one seed has no spread, not a spread of 0
    assert pr.mean_std([]) == "–"


def test_method_colors_one_per_curve_and_base_methods_alike_everywhere():
    from types import SimpleNamespace

    def runs(variant_of=None, reevaluates=None):
        return [SimpleNamespace(reevaluates=reevaluates, variant_of=variant_of)]

    bases = {m: runs() for m in ("select", "csro", "focal", "offpearl", "corro", "borel")}
    ablations = {f"select-ablation-{i}": runs("select") for i in range(6)}  # more than the 4 spare C colours
    sigma = {"select-sigma0.1": runs(reevaluates="select")}  # a re-evaluation has no curve: it takes no colour
    plotted = {"point-robot": {**bases, **sigma, **ablations}, "cheetah-vel": {**bases, "borel-vae6000": runs("borel")}}
    colors = pr.method_colors(plotted)
    for env_id, methods in plotted.items():
        curves = [m for m in methods if m not in sigma]
        assert len({colors[env_id][m] for m in curves}) == len(curves), env_id  # no two curves share a colour
    assert all(colors["point-robot"][m] == colors["cheetah-vel"][m] == f"C{i}" for i, m in enumerate(bases))
    spare = ["C6", "C7", "C8", "C9", "black", "gold"]
    assert [colors["point-robot"][f"select-ablation-{i}"] for i in range(6)] == spare
    assert colors["cheetah-vel"]["borel-vae6000"] == "C6"  # each figure's variants from the first spare colour
    many = pr.method_colors({"cheetah-vel": {f"method-{i:02d}": runs() for i in range(12)}})["cheetah-vel"]
    assert list(many.values())[9:] == ["C9", "black", "gold"]  # more than 10 base methods: no colour twice


@needs_rliable
def test_bootstrap_known_cases():
    scores = np.tile(np.linspace(-8.0, -4.0, 10), (3, 1))  # every seed scores the same on each task
    difference, low, high, probability = pr.improvement(scores, np.tile(scores[0] - 1.5, (4, 1)), RLIABLE, reps=500)
    assert difference == pytest.approx(1.5) and low == pytest.approx(1.5) and high == pytest.approx(1.5)
    assert probability == 1.0  # every select score beats every baseline score on its task
    assert pr.improvement(scores, scores.copy(), RLIABLE, reps=500) == (0.0, 0.0, 0.0, 0.5)

    rng = np.random.default_rng(7)
    x, y = rng.normal(-6.0, 1.0, (3, 10)), rng.normal(-7.0, 1.5, (5, 10))
    state = np.random.get_state()
    first = pr.improvement(x, y, RLIABLE, reps=5000)
    assert first == pr.improvement(x, y, RLIABLE, reps=5000)  # seeded: the tables are reproducible
    assert str(np.random.get_state()) == str(state)  # and NumPy's global generator is left as it was
    difference, low, high, probability = first
    assert difference == pytest.approx(x.mean() - y.mean(), abs=1e-12)
    # an independent stratified bootstrap: seeds resampled with replacement within each task, per method
    tasks = np.arange(10)
    xs = x[rng.integers(0, 3, (20000, 3, 10)), tasks].mean((1, 2))
    ys = y[rng.integers(0, 5, (20000, 5, 10)), tasks].mean((1, 2))
    reference = np.percentile(xs - ys, [2.5, 97.5])
    assert low < difference < high and np.allclose([low, high], reference, atol=0.05 * (high - low))
    wins = (x[:, None, :] > y[None, :, :]) + 0.5 * (x[:, None, :] == y[None, :, :])  # Mann-Whitney's U / (n m)
    assert probability == pytest.approx(wins.mean())


@needs_rliable
def test_comparison_table_cells(tmp_path):
    results = tmp_path / "results"
    per_task = np.linspace(-8.0, -4.0, 10)
    for seed in (1, 2, 3):
        write_result(results, "select", seed, {"offline": per_task.mean()}, per_task={"offline": per_task})
        write_result(results, "focal", seed, {"offline": per_task.mean() - 1.5}, per_task={"offline": per_task - 1.5})
    tables = pr.results_tables(results, reps=200)
    assert row(tables, "select − focal") == "| select − focal | +1.50 [+1.50, +1.50], P 1.00 |"
    assert "200 resamples of the seeds within each test task, seed 0" in tables


def test_without_rliable_plain_means_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rliable", None)  # `import rliable` raises ImportError
    results = tmp_path / "results"
    write_select(results)
    write_result(results, "offpearl", 1, {p: -16.0 for p in ALL})
    tables = pr.results_tables(results)
    assert "rliable is not importable here: no interval or probability of improvement was computed" in tables
    finals = np.array(list(SELECT.values()))
    offline = f"{finals.mean() + 16:+.2f} ({mean_std(finals)} vs -16.00 ± –)"
    assert row(tables, "select − offpearl").startswith(f"| select − offpearl | {offline} |")


# ------------------------------------------------------------------------------------------------
# The command: figures, tables.md, README blocks, errors
# ------------------------------------------------------------------------------------------------
README = "# Title\n\nbefore\n\n<!-- results:point-robot -->\nold numbers\n<!-- /results:point-robot -->\n\nafter\n"


def test_command_figures_and_readme_round_trip(tmp_path):
    results, out, readme = tmp_path / "results", tmp_path / "docs", tmp_path / "README.md"
    write_select(results)
    write_result(results, "csro", 1, {p: -9.0 for p in ALL})
    write_result(results, "bc-none", 1, {"offline": -7.0}, steps=(1000,), variant_of="select")
    write_result(results, "focal", 1, {"offline": -4.4}, env_id="cheetah-vel")
    readme.write_text(README)
    args = ("plot_results.py", "--results-dir", results, "--out-dir", out, "--bootstrap-reps", "200")
    proc = run_script(*args, "--readme", readme)
    for name in ("point-robot.png", "cheetah-vel.png", "summary.png"):
        assert (out / name).stat().st_size > 10_000, name
    report = (out / "tables.md").read_text()
    assert report in proc.stdout and report.index("### cheetah-vel") < report.index("### point-robot")
    block = report.split("### point-robot\n\n")[1]
    assert readme.read_text() == README.replace("old numbers\n", f"\n{block}\n")  # the rest as it was
    pr.main(pr.Args(results_dir=str(results), bootstrap_reps=200, check_readme=(str(readme),)))  # up to date

    readme.write_text(readme.read_text().replace("| select |", "| SELECT |"))
    proc = run_script(*args, "--check-readme", readme, check=False)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "point-robot" in proc.stderr and "--readme" in proc.stderr

    # blocks in a folder of pages (every .md file under it) and the summary table, written and checked together
    pages = tmp_path / "pages"
    (pages / "results").mkdir(parents=True)
    (pages / "results" / "cheetah-vel.md").write_text(
        "# c\n\n<!-- results:cheetah-vel -->\n<!-- /results:cheetah-vel -->\n"
    )
    readme.write_text("# R\n\n<!-- results:summary -->\n\n<!-- /results:summary -->\n")
    run_script(*args, "--readme", readme, pages)
    summary = readme.read_text()  # online-proximal of select: mean(-7, -8, -9.5); offline: mean(-4, -5, -6.5)
    assert "| family | seeds | RL steps | select | csro | focal |" in summary
    assert "| cheetah-vel | 1 | 2,000 | – | – | – (-4.4) |" in summary  # focal ran only the offline protocol there
    # seeds: the line's most; csro's single seed against select's three is named in its cell
    assert "| point-robot | 3 | 2,000 | **-8.2** (-5.2) | -9.0 (-9.0) [1 seed] | – |" in summary
    assert "### " not in (pages / "results" / "cheetah-vel.md").read_text()
    assert "| focal | 1 | 2,000 | -4.40 ± –" in (pages / "results" / "cheetah-vel.md").read_text()
    run_script(*args, "--check-readme", readme, pages)

    # a study in a subfolder (--block-prefix long/) writes its own summary block; the plain one stays as it is
    readme.write_text(summary + "\n<!-- results:long/summary -->\n<!-- /results:long/summary -->\n")
    pr.main(pr.Args(results_dir=str(results), out_dir=str(tmp_path / "long"), bootstrap_reps=200,
                    block_prefix="long/", readme=(str(readme),)))  # fmt: skip
    table = summary.split("<!-- results:summary -->\n")[1].split("<!-- /results:summary -->")[0]
    assert readme.read_text() == summary + f"\n<!-- results:long/summary -->\n{table}<!-- /results:long/summary -->\n"
    pr.main(pr.Args(results_dir=str(results), bootstrap_reps=200, block_prefix="long/", check_readme=(str(readme),)))


def test_readme_blocks_in_process():
    blocks = {"point-robot": "table\n"}
    assert pr.replace_readme_blocks("no markers\n", blocks) == ("no markers\n", [])
    text, changed = pr.replace_readme_blocks(README, blocks)
    assert changed == ["point-robot"] and "-->\n\ntable\n\n<!-- /results" in text
    assert pr.replace_readme_blocks(text, blocks) == (text, [])
    with pytest.raises(pr.InputError, match="no closing line"):
        pr.replace_readme_blocks("<!-- results:point-robot -->\n", blocks)
    with pytest.raises(pr.InputError, match="no results for ant-dir"):
        pr.replace_readme_blocks("<!-- results:ant-dir -->\n<!-- /results:ant-dir -->\n", blocks)


def test_readme_blocks_of_another_results_dir_are_left_alone():
    """--block-prefix fidelity/: only the blocks named fidelity/<env>; the plain ones (results/) stay as they are."""
    text = README + "<!-- results:fidelity/cheetah-vel -->\nold\n<!-- /results:fidelity/cheetah-vel -->\n"
    new, changed = pr.replace_readme_blocks(text, {"cheetah-vel": "t\n"}, prefix="fidelity/")
    assert changed == ["cheetah-vel"] and new == text.replace("\nold\n", "\n\nt\n\n")
    new, changed = pr.replace_readme_blocks(text, {"point-robot": "t\n"})
    assert changed == ["point-robot"] and new.endswith("<!-- results:fidelity/cheetah-vel -->\nold\n"
                                                      "<!-- /results:fidelity/cheetah-vel -->\n")  # fmt: skip


def test_training_scalars_are_read_and_plotted(tmp_path):
    results, out = tmp_path / "results", tmp_path / "docs"
    for seed, scale in ((1, 1.0), (2, 3.0)):
        path = write_result(results, "csro", seed, {"offline": -9.0}, env_id="cheetah-vel")
        record = json.loads(path.read_text())
        record["training"] = {
            "charts/brac_alpha": {"steps": [500, 1000], "values": [50 * scale, 60 * scale]},
            "charts/SPS": {"steps": [500, 1000], "values": [99.0, 10 * scale]},  # the run's average: the last value
            "charts/eval_seconds": {"steps": [1000, 2000], "values": [30.0, 30 * scale]},
        }
        record["wall_seconds"] = 600.0 * scale
        path.write_text(json.dumps(record))
    runs = pr.load_runs(results)
    assert sorted(r.training["charts/brac_alpha"][1000] for r in runs) == [60.0, 180.0]
    # the cost table: steps/s 10 and 30, evaluation 1 and 2 minutes, wall 10 and 30 minutes
    assert row(pr.results_tables(results, reps=200), "csro | 2 | 2,000 | 20.0 (10.0-30.0)") == (
        "| csro | 2 | 2,000 | 20.0 (10.0-30.0) | 1.5 (1.0-2.0) | 20.0 (10.0-30.0) |"
    )
    run_script("plot_results.py", "--results-dir", results, "--out-dir", out, "--bootstrap-reps", "200",
               "--training-tags", "charts/brac_alpha")  # fmt: skip
    assert (out / "cheetah-vel_training.png").stat().st_size > 10_000


def test_bad_input_is_one_line(tmp_path):
    proc = run_script("plot_results.py", "--results-dir", tmp_path / "missing", check=False)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert f"no result files found ({tmp_path / 'missing'}/<env-id>/<method>__s<seed>.json)" in proc.stderr
    assert "study runner" in proc.stderr and "--runs-dir" in proc.stderr

    corrupt = write_result(tmp_path / "results", "select", 1, {"offline": -4.0})
    corrupt.write_text('{"schema": 1, "env_id": ')
    with pytest.raises(pr.InputError, match=re.escape(f"{corrupt} is not valid JSON")):
        pr.load_runs(tmp_path / "results")
    corrupt.write_text(json.dumps({"schema": 1, "env_id": "point-robot", "method": "select"}))
    with pytest.raises(pr.InputError, match=re.escape(f"{corrupt} is not a valid result file (KeyError")):
        pr.load_runs(tmp_path / "results")
    write_result(tmp_path / "results", "csro", 2, {"offline": -4.0}).rename(corrupt)
    with pytest.raises(pr.InputError, match="file name and content disagree"):
        pr.load_runs(tmp_path / "results")
    with pytest.raises(pr.InputError, match="unknown protocol"):
        pr.main(pr.Args(results_dir=str(tmp_path), protocols=("online-greedy",)))


# ------------------------------------------------------------------------------------------------
# Run directories (work in progress) and a tiny real run
# ------------------------------------------------------------------------------------------------
def make_tensorboard_run(runs_dir, name, exp_name, seed, final_values):
    run_dir = runs_dir / name
    writer = SummaryWriter(str(run_dir))
    for step, scale in ((1000, 2.0), (2000, 1.0)):
        for protocol, value in final_values.items():
            writer.add_scalar(f"eval/{protocol}/return", value * scale, step)
            writer.add_scalar(f"eval/{protocol}/context_shift", 0.25, step)
    writer.close()
    args = {"env_id": "point-robot", "exp_name": exp_name, "seed": seed, "num_train_steps": 2000}
    (run_dir / "args.json").write_text(json.dumps(args))


def test_tensorboard_run_directories(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rliable", None)
    runs = tmp_path / "runs"
    for seed, offset in ((1, 0.0), (2, 1.0), (3, 2.0)):
        make_tensorboard_run(runs, f"point-robot__select__{seed}__0", "select", seed, {"offline": -4.0 - offset})
    # the study runner's layout and names, <env>/<method>__s<seed>: a method other than the script's is an ablation
    make_tensorboard_run(runs / "point-robot", "select-bc-none__s1", "select", 1, {"offline": -8.0})
    (runs / "unfinished").mkdir()  # a run without args.json is ignored
    tables = pr.results_tables(tmp_path / "no-results", runs_dir=runs)
    assert row(tables, "select") == f"| select | 3 | 2,000 | {expected_cell([-4.0, -5.0, -6.0], 0.25, -5.0)} |"
    assert row(tables, "select-bc-none") == "| select-bc-none | select | 2,000 | 1 | -8.00 ± – [0.25] |"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from test_select import TINY, write_scripted_point_robot_dataset

    data_dir, runs_dir = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("runs")
    write_scripted_point_robot_dataset(data_dir, checkpoints=2, episodes=3)
    run_script("select.py", "--data-dir", data_dir, "--runs-dir", runs_dir, "--run-name", "tiny", *TINY, timeout=300)
    return runs_dir / "tiny"


def test_tiny_real_run_from_its_run_directory_and_as_a_result_file(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rliable", None)
    final = json.loads((tiny_run / "final_eval.json").read_text())
    history = [json.loads(line) for line in (tiny_run / "eval_history.jsonl").read_text().splitlines()]
    finals = [final["protocols"][p] for p in pr.PROTOCOLS]
    cells = [f"{pr.fmt(r['return'])} ± – [{pr.fmt(r['context_shift'])}]" for r in finals]

    from_run_dir = pr.results_tables(tmp_path / "no-results", runs_dir=tiny_run.parent)
    assert [c.split(" (best")[0] for c in row(from_run_dir, "select").split(" | ")[3:]] == cells
    run = pr.load_run_dir(tiny_run)
    assert sorted(run.curve["offline"]) == [20, 40]
    assert run.final["offline"]["per_task"] == final["protocols"]["offline"]["per_task"]

    args = json.loads((tiny_run / "args.json").read_text())
    record = {
        "schema": 1, "env_id": args["env_id"], "method": "select", "variant_of": None, "reevaluates": None,
        "script": "select.py", "flags": [], "study_flags": [], "seed": args["seed"], "command": "python select.py",
        "args": args, "preset": "tiny", "code": "", "dataset": "", "wall_seconds": 0.0, "threads": 1, "device": "cpu",
        "machine": "", "final": final,
        "curve": {
            "steps": [h["step"] for h in history],
            "return": {p: [h["protocols"][p]["return"] for h in history] for p in final["protocols"]},
            "context_shift": {p: [h["protocols"][p]["context_shift"] for h in history] for p in final["protocols"]},
        },
    }  # fmt: skip
    path = tmp_path / "results" / "point-robot" / "select__s1.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    from_result = pr.results_tables(tmp_path / "results")
    best = [max(h["protocols"][p]["return"] for h in history) for p in pr.PROTOCOLS]
    assert (
        row(from_result, "select")
        == "| select | 1 | 40 | " + " | ".join(f"{c} (best {pr.fmt(b)})" for c, b in zip(cells, best)) + " |"
    )


@needs_rliable
def test_committed_readme_blocks_equal_the_committed_results():
    """Every env with committed result files has a README block, and it is what plot_results.py prints from them;
    so do the measurement studies in subfolders (results/<study>/<env>/: blocks named <study>/<env>)."""
    results = ROOT / "results"
    studies = [(results, "")] + [
        (p, f"{p.name}/") for p in sorted(results.iterdir()) if p.is_dir() and any(p.glob("*/*.json"))
    ] if results.is_dir() else []  # fmt: skip
    if not any(any(folder.glob("*/*.json")) for folder, _ in studies):
        pytest.skip("no committed result files yet")
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    text = "".join(page.read_text() for page in pages)
    for folder, prefix in studies:
        envs = sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*.json")))
        for env_id in envs:
            assert f"<!-- results:{prefix}{env_id} -->" in text, f"no page has a results block for {prefix}{env_id}"
        if envs:  # 10,000 bootstrap resamples per comparison cell: minutes on a loaded machine
            run_script("plot_results.py", "--results-dir", folder, "--block-prefix", prefix, "--check-readme",
                       ROOT / "README.md", ROOT / "docs", timeout=600)  # fmt: skip
    assert "<!-- results:summary -->" in (ROOT / "README.md").read_text()


# ------------------------------------------------------------------------------------------------
# Several datasets (study.py --data-seeds)
# ------------------------------------------------------------------------------------------------
def test_variance_components_and_pooled_difference_hand_computed():
    split = pr.variance_components([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    # dataset means 2 and 5 (variance 4.5), pooled seed variance (2 + 2) / 4 = 1, 3 seeds per dataset:
    # the datasets' variance 4.5 - 1/3, its share (4.5 - 1/3) / (4.5 - 1/3 + 1)
    assert split["between_sd"] == pytest.approx(4.5**0.5) and split["within_sd"] == pytest.approx(1.0)
    assert split["share"] == pytest.approx((4.5 - 1 / 3) / (4.5 - 1 / 3 + 1))
    assert pr.variance_components([[1.0, 3.0], [1.0, 3.0]])["share"] == 0.0  # identical datasets: floored at 0
    # seeds all equal within a dataset: only the datasets' draw varies; differences 1 and 3, mean 2; a resample of two
    # datasets averages to 1, 2 or 3 (probabilities 1/4, 1/2, 1/4): the 95% interval is [1, 3]
    point, low, high = pr.pooled_difference({0: [1.0, 1.0], 1: [3.0, 3.0]}, {0: [0.0, 0.0], 1: [0.0, 0.0]}, 4000)
    assert (point, low, high) == (2.0, 1.0, 3.0)


@needs_rliable
def test_dataset_study_tables(tmp_path):
    """Two methods x three datasets x two seeds: each dataset's row with its hash and CPU kind, the spread table from
    the numbers, the per-dataset and pooled comparison, and the tasks below the task-blind return."""
    finals = {("select", 0): [-5.0, -7.0], ("select", 1): [-4.0, -6.0], ("select", 2): [-9.0, -11.0],
              ("csro", 0): [-6.0, -8.0], ("csro", 1): [-6.0, -6.0], ("csro", 2): [-10.0, -10.0]}  # fmt: skip
    for (method, d), values in finals.items():
        for seed, r in enumerate(values, start=1):
            per_task = {p: r + PATTERN for p in ALL}
            if (method, d, seed) == ("select", 2, 1):
                per_task = {p: r + np.where(np.arange(10) == 0, -10.0, 10.0 / 9) for p in ALL}  # task 2 at r - 10
            dataset = {"content_hash": f"{d}" * 64, "checkpoint_returns": None}
            cpu = "AMD EPYC 7B13" if d == 0 else "Intel(R) Xeon(R) Processor"
            write_result(tmp_path, method, seed, dict.fromkeys(ALL, r), per_task=per_task, data_seed=d,
                         dataset=dataset, machine={"cpu": cpu})  # fmt: skip
    tables = pr.results_tables(tmp_path, reps=2000)
    assert row(tables, "0 (`000000000000`, AMD EPYC)").startswith(
        f"| 0 (`000000000000`, AMD EPYC) | select | 2 | {expected_cell([-5.0, -7.0], 0.1)} |"
    )
    assert "| 2 (`222222222222`, Intel Xeon) | csro | 2 |" in tables
    split = pr.variance_components([[-5.0, -7.0], [-4.0, -6.0], [-9.0, -11.0]])
    spread = f"| select | offline | 3 | 6 | {mean_std([-5, -7, -4, -6, -9, -11])} | {split['between_sd']:.2f} |"
    assert spread + f" {split['within_sd']:.2f} | {100 * split['share']:.0f}% |" in tables
    comparisons = [line for line in tables.splitlines() if line.startswith("| select − csro |")]
    assert [line.split(" | ")[1] for line in comparisons] == ["0", "1", "2", "pooled"]
    assert comparisons[1].split(" | ")[2].startswith("+1.00 [")  # dataset 1: -5 against -6
    assert comparisons[3].split(" | ")[2].startswith("+0.67 [")  # pooled: (1 + 1 + 0) / 3
    assert "| select | online-proximal | none | none | 2 (1/2) |" in tables  # seed 1 on dataset 2: task 2 at -19
    assert "| csro | offline | none | none | none |" in tables


def test_plateau_step_and_late_mean_on_hand_made_curves(tmp_path):
    steps = [1000, 2000, 3000, 4000]
    assert pr.plateau_step(steps, [0.0, 10.0, 10.2, 10.3], 100.0) == 2000  # rises of at most 5 after 2,000
    assert pr.plateau_step(steps, [0.0, 10.0, 2.0, 14.9], -100.0) == 2000  # 14.9 is within 5 of the best (10)
    assert pr.plateau_step(steps, [0.0, 10.0, 2.0, 15.1], 100.0) is None  # the last evaluation is a rise: still rising
    assert pr.plateau_step(steps, [0.0, 1.0, 2.0, 3.0], 100.0) == 1000  # never a rise above 5: from the first
    assert pr.plateau_step([500], [3.0], 10.0) == 500
    # in the table: the seed-mean offline curve, the dataset's range from the runs' fingerprint; late means of the
    # last three evaluations per seed, then mean ± std over seeds
    dataset = {"content_hash": "a" * 64, "checkpoint_returns": {"steps": [1, 2], "test_tasks": [-100.0, 0.0]}}
    steps5 = [1000, 2000, 3000, 4000, 5000]
    curves = {1: [-90.0, -50.0, -40.0, -41.0, -42.0], 2: [-80.0, -60.0, -38.0, -39.0, -30.0]}  # mean rises 4 at 5,000
    for seed, curve in curves.items():
        write_result(tmp_path, "select", seed, dict.fromkeys(ALL, curve[-1]), steps=steps5,
                     curve=dict.fromkeys(ALL, curve), dataset=dataset)  # fmt: skip
    rising = {1: [-90.0, -50.0, -40.0, -35.0, -20.0], 2: [-90.0, -50.0, -40.0, -35.0, -20.0]}
    for seed, curve in rising.items():
        write_result(tmp_path, "csro", seed, dict.fromkeys(ALL, curve[-1]), steps=steps5,
                     curve=dict.fromkeys(ALL, curve), dataset=dataset)  # fmt: skip
    tables = pr.results_tables(tmp_path, reps=200)
    late = [np.mean(c[-3:]) for c in curves.values()]
    assert f"| select | 2 | 5,000 | 3,000 | {mean_std(late)} |" in tables
    assert f"| csro | 2 | 5,000 | still rising | {mean_std([-95 / 3, -95 / 3])} |" in tables
    assert "rises by more than 5% of the dataset's first-to-last checkpoint range (100.00)" in tables
