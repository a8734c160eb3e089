"""benchmarks/ant_goal_diagnosis.py: its episode statistics by hand, and both commands on a tiny ant-goal dataset and
a tiny select.py run (the script's own meta-test, in process, with recording envs)."""

import json
import math

import numpy as np
import pytest
from conftest import load_script, run_script
from test_minari import write_tiny_dataset
from test_select import TINY

diagnosis = load_script("benchmarks/ant_goal_diagnosis.py", "ant_goal_diagnosis")


def quaternion(axis, angle):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    return np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis])


def test_upside_down_from_the_torso_quaternion():
    obs = np.zeros((4, 29))
    obs[0, 3:7] = quaternion([0, 0, 1], 2.0)  # turned about the vertical: upright
    obs[1, 3:7] = quaternion([1, 0, 0], math.pi)  # rolled over: upside down
    obs[2, 3:7] = quaternion([0, 1, 0], math.pi / 2 - 0.01)  # pitched just under 90 degrees: its up axis still up
    obs[3, 3:7] = quaternion([0, 1, 0], math.pi / 2 + 0.01)  # just over
    assert diagnosis.upside_down(obs).tolist() == [False, True, False, True]


def test_episode_statistics_by_hand():
    obs = np.zeros((3, 29))
    obs[:, 3] = 1.0  # upright
    obs[2, 3:7] = quaternion([1, 0, 0], math.pi)  # the third step upside down
    actions = np.array([[1.0] * 8, [0.5] * 8, [-0.995] + [0.0] * 7])
    last = np.zeros(29)
    last[:2], last[3] = (0.5, 1.0), 1.0  # ends at (0.5, 1.0), upright
    stats = diagnosis.episode_statistics(obs, actions, np.array([-1.0, -2.0, -3.5]), last, goal=(2.0, 3.0))
    assert stats["return"] == -6.5
    assert stats["ctrl"] == pytest.approx(0.1 * (8 + 8 * 0.25 + 0.995**2))
    assert stats["distance"] == pytest.approx(2.5)  # |(1.5, 2.0)|
    assert stats["moved"] == pytest.approx(math.sqrt(1.25))  # from (0, 0) to (0.5, 1.0)
    assert stats["heading"] == pytest.approx(4 / math.sqrt(1.25 * 13))  # (0.5, 1) . (2, 3) / (|(0.5, 1)| |(2, 3)|)
    assert stats["flipped"] == pytest.approx(1 / 4)  # 1 of the 4 observations (3 steps and the final one)
    assert stats["saturated"] == pytest.approx(9 / 24)  # 8 components at 1.0 and one at -0.995
    summary = diagnosis.summary([stats, {**stats, "distance": 0.5, "return": -1.5}, {**stats, "distance": 1.0}])
    assert summary["distance"] == 1.0 and summary["return"] == pytest.approx((-6.5 - 1.5 - 6.5) / 3)


@pytest.fixture(scope="module")
def tiny_ant_goal(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("ant-goal-data")
    write_tiny_dataset(data_dir, "ant-goal")
    return data_dir


def test_data_table_per_kept_checkpoint(tiny_ant_goal):
    out = run_script("benchmarks/ant_goal_diagnosis.py", "--data-dir", tiny_ant_goal, "data", timeout=300).stdout
    rows = [line for line in out.splitlines() if line.startswith("| 1") or line.startswith("| 2")]
    assert [r.split(" | ")[:2] for r in rows] == [
        ["| 100", "all (80 episodes)"], ["| 100", "test (20 episodes)"],
        ["| 200", "all (80 episodes)"], ["| 200", "test (20 episodes)"],
    ]  # fmt: skip
    ctrl = float(rows[0].split(" | ")[3])  # uniform random actions: 0.1 * 8 * E[a^2] = 0.267 per step, 200 steps
    assert 45 < ctrl < 62, rows[0]


def test_policy_statistics_of_a_select_checkpoint(tiny_ant_goal, tmp_path):
    run_script("select.py", "--env-id", "ant-goal", "--data-dir", tiny_ant_goal, "--runs-dir", tmp_path, "--run-name",
               "tiny", *TINY, "--protocols", "offline", timeout=600)  # fmt: skip
    out = run_script(
        "benchmarks/ant_goal_diagnosis.py", "--data-dir", tiny_ant_goal, "policy", "select.py",
        tmp_path / "tiny" / "checkpoint.pt", timeout=600,
    ).stdout  # fmt: skip
    logged = [line for line in (tmp_path / "tiny" / "eval_history.jsonl").read_text().splitlines() if line][-1]
    assert "offline: return" in out and "| 10 |" in out  # 10 test tasks x 1 run (TINY: --eval-runs 1)
    reported = float(out.split("offline: return ")[1].split(",")[0])
    assert reported == pytest.approx(json.loads(logged)["protocols"]["offline"]["return"], abs=0.05)
    table_return = float(out.split("| 10 | ")[1].split(" |")[0])
    assert table_return == pytest.approx(reported, abs=0.05)  # the recorded final episodes are the scored ones
    assert "Q1(s, pi(s, z)) - Q1(s, a_data)" in out and "discounted return over its 200 steps" in out


def test_policy_refuses_a_missing_checkpoint(tmp_path):
    proc = run_script("benchmarks/ant_goal_diagnosis.py", "policy", "select.py", tmp_path / "none.pt", check=False)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'none.pt'} is not a file"]
