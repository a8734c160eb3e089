"""plot_results.py on run directories with real TensorBoard event files."""

import json

import numpy as np
from conftest import run_script
from torch.utils.tensorboard import SummaryWriter


def make_run(runs_dir, method, seed, final_values):
    run_dir = runs_dir / f"point-robot__{method}__{seed}__0"
    writer = SummaryWriter(str(run_dir))
    for step, scale in ((1000, 2.0), (2000, 1.0)):
        for protocol, value in final_values.items():
            writer.add_scalar(f"eval/{protocol}/return", value * scale, step)
    writer.close()
    (run_dir / "args.json").write_text(json.dumps({"env_id": "point-robot", "exp_name": method, "seed": seed}))


def test_curves_and_table(tmp_path):
    runs = tmp_path / "runs"
    for seed, offset in ((1, 0.0), (2, 1.0), (3, 2.0)):
        make_run(runs, "select", seed, {"offline": -4.0 - offset, "online-proximal": -6.0 - offset})
    make_run(runs, "csro", 1, {"offline": -5.0, "online-proximal": -10.0})
    (runs / "unfinished").mkdir()  # a run without args.json is ignored
    out = tmp_path / "plots"
    proc = run_script(
        "plot_results.py", "--runs-dir", runs, "--out-dir", out, "--protocols", "offline", "online-proximal"
    )
    table = (out / "results.md").read_text()
    assert (out / "point-robot.png").stat().st_size > 10_000
    select_row = next(line for line in table.splitlines() if line.startswith("| select"))
    finals = np.array([-4.0, -5.0, -6.0])
    assert f"{finals.mean():.2f} ± {finals.std(ddof=1):.2f} (n=3) [{finals.mean():.2f}]" in select_row
    assert "-10.00 ± 0.00 (n=1)" in table and table in proc.stdout


def test_bad_input_is_one_line(tmp_path):
    proc = run_script("plot_results.py", "--runs-dir", tmp_path / "missing", check=False)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    proc = run_script("plot_results.py", "--runs-dir", tmp_path, "--protocols", "online-greedy", check=False)
    assert proc.returncode != 0 and "unknown protocol" in proc.stderr
