"""Tests of select.py: the mathematics on hand-checked inputs, and the script run as a user runs it (tiny sizes)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, load_script, run_script

import omrl_envs

sel = load_script("select.py", "select_main")

TINY = [
    "--num-train-steps", "40", "--eval-every", "20", "--log-every", "10", "--meta-batch-size", "4",
    "--batch-size", "16", "--context-size", "16", "--latent-dim", "4", "--encoder-hidden", "16", "16",
    "--rl-hidden", "16", "16", "--eval-runs", "1",
]  # fmt: skip


def scripted_point_robot_data(task_index: int, checkpoints: int, episodes: int, rng: np.random.Generator) -> dict:
    """Stand-in for collect_sac.py's data: a goal-seeking policy whose action noise shrinks over `checkpoints`
    levels, from uniform random actions to a near-greedy walk (mixed quality, as SAC checkpoints)."""
    env = omrl_envs.make_env("point-robot", task_index)
    goal = np.asarray(env.unwrapped.goal)
    columns = {k: [] for k in omrl_envs.FLOAT_KEYS + omrl_envs.ID_KEYS}
    for level, quality in enumerate(np.linspace(0.0, 1.0, checkpoints)):
        for episode in range(episodes):
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            for _ in range(omrl_envs.FAMILIES["point-robot"].horizon):
                greedy = np.clip((goal - obs) / 0.1, -1.0, 1.0)
                noisy = (
                    quality * greedy
                    + (1 - quality) * rng.uniform(-1, 1, 2)
                    + rng.normal(0, 0.3 * (1 - quality) + 0.05, 2)
                )
                action = np.clip(noisy, -1.0, 1.0)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                for key, value in (
                    ("observations", obs),
                    ("actions", action),
                    ("rewards", reward),
                    ("next_observations", next_obs),
                    ("terminations", float(terminated)),
                    ("truncations", float(truncated)),
                ):
                    columns[key].append(value)
                columns["checkpoint"].append(level)
                columns["episode"].append(episode)
                obs = next_obs
                if terminated or truncated:
                    break
    data = {k: np.asarray(v, dtype=np.float32) for k, v in columns.items() if k in omrl_envs.FLOAT_KEYS}
    data.update({k: np.asarray(columns[k], dtype=np.int64) for k in omrl_envs.ID_KEYS})
    return data


def write_scripted_point_robot_dataset(data_dir: Path, checkpoints: int = 6, episodes: int = 10, seed: int = 0) -> Path:
    dataset_dir = Path(data_dir) / "point-robot"
    rng = np.random.default_rng(seed)
    for task in range(omrl_envs.NUM_TASKS):
        omrl_envs.write_task_data(
            dataset_dir, "point-robot", task, scripted_point_robot_data(task, checkpoints, episodes, rng)
        )
    omrl_envs.write_manifest(dataset_dir, omrl_envs.make_manifest("point-robot", complete=True, scripted=True))
    return dataset_dir


if __name__ == "__main__" and len(sys.argv) > 1:  # python tests/test_select.py DATA_DIR [CHECKPOINTS EPISODES]
    write_scripted_point_robot_dataset(Path(sys.argv[1]), *map(int, sys.argv[2:4]))


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A small scripted Point-Robot dataset (40 tasks x 6 quality levels x 10 episodes = 1,200 transitions each)."""
    data_dir = tmp_path_factory.mktemp("data")
    write_scripted_point_robot_dataset(data_dir)
    return data_dir


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """One tiny training run with every protocol (shared by the run-record tests)."""
    runs_dir = tmp_path_factory.mktemp("runs")
    proc = run_script(
        "select.py", "--data-dir", tiny_data, "--runs-dir", runs_dir, "--run-name", "tiny", *TINY, timeout=300
    )
    (runs_dir / "tiny.stdout").write_text(proc.stdout)
    return runs_dir / "tiny"


def select_run(tiny_data, runs_dir, name, *extra, check=True, timeout=300):
    return run_script(
        "select.py", "--data-dir", tiny_data, "--runs-dir", runs_dir, "--run-name", name, *TINY, *extra,
        check=check, timeout=timeout,
    )  # fmt: skip


def scalars(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_headline_printed(module, protocol: str, final: dict, stdout: str) -> None:
    """The script's HEADLINE_PROTOCOL is its paper's, and its last line prints that protocol's final return."""
    assert module.HEADLINE_PROTOCOL == protocol
    headline = final["protocols"][protocol]["return"]
    assert stdout.strip().splitlines()[-1].endswith(f"{protocol}, return {headline:.2f}")


def assert_reevaluation_reproduces(script: str, run_dir: Path, tmp_path: Path, protocols=()) -> None:
    """--eval-checkpoint gives final_eval.json's protocols exactly; alone, each of `protocols` gives its own."""
    final = json.loads((run_dir / "final_eval.json").read_text())
    output = tmp_path / "reeval.json"
    run_script(script, "--eval-checkpoint", run_dir / "checkpoint.pt", "--eval-output", output)
    assert without_z(json.loads(output.read_text())["protocols"]) == final["protocols"]  # exactly, every float
    for protocol in protocols:  # each protocol's samples are its own: alone, it gives the logged number
        output = tmp_path / f"{protocol}.json"
        run_script(script, "--eval-checkpoint", run_dir / "checkpoint.pt", "--eval-output", output,
                   "--protocols", protocol)  # fmt: skip
        assert without_z(json.loads(output.read_text())["protocols"]) == {protocol: final["protocols"][protocol]}


def without_z(protocols: dict) -> dict:
    """A re-evaluation's results without the z it keeps (each run's final z, each test task's offline z), checked
    for their shapes: one z per run (10 test tasks x --eval-runs 1), one per test task."""
    for result in protocols.values():
        assert len(result["z_final"]["tasks"]) == len(result["z_final"]["z"]) == 10
        assert result["z_offline"]["tasks"] == list(omrl_envs.TEST_TASKS) and len(result["z_offline"]["z"]) == 10
    return {p: {k: v for k, v in r.items() if k not in ("z_final", "z_offline")} for p, r in protocols.items()}


def assert_tiny_evaluation_record(run_dir: Path, protocols) -> dict:
    """final_eval.json and eval_history.jsonl of a TINY run (40 steps, evaluated at 20 and 40); returns the final."""
    final = json.loads((run_dir / "final_eval.json").read_text())
    assert final["step"] == 40 and set(final["protocols"]) == set(protocols)
    for result in final["protocols"].values():
        assert len(result["per_task"]) == 10 and len(result["per_round"]) == 20
        assert result["per_round_runs"] == [10] * 20  # every run of every test task reaches every round
        assert result["return"] == pytest.approx(result["per_round"][-1])
        assert np.isfinite(result["context_shift"])
    assert final["dataset"]["content_hash"] and len(final["dataset"]["transitions_per_task"]) == 40
    assert final["code"]["files"]["omrl_envs.py"] and final["wall_seconds"] > 0 and final["threads"] >= 1
    history = [json.loads(line) for line in (run_dir / "eval_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [20, 40]
    return final


# ------------------------------------------------------------------------------------------------
# Mathematics, checked exactly
# ------------------------------------------------------------------------------------------------
def club_pairwise(z, mean, var):
    """The reference's O(b^2) form (MoreanP/CSRO sac.py CLUB_loss): every (k, l) pair materialised."""
    t, b, _ = mean.shape
    mean_pairs = mean[:, :, None, :].expand(-1, -1, b, -1).reshape(t, b * b, -1)
    var_pairs = var[:, :, None, :].expand(-1, -1, b, -1).reshape(t, b * b, -1)
    z_pairs = z.repeat(1, b, 1)
    negative = -((z_pairs - mean_pairs) ** 2 / var_pairs).mean()
    positive = -((z - mean) ** 2 / var).mean()
    return positive - negative


def test_club_upper_bound_in_linear_time_equals_pairwise_form():
    gen = torch.Generator().manual_seed(0)
    for t, b, latent in ((1, 1, 1), (3, 7, 5), (4, 33, 20)):
        z = torch.tanh(torch.randn(t, b, latent, generator=gen, dtype=torch.float64)).requires_grad_()
        mean = torch.tanh(torch.randn(t, b, latent, generator=gen, dtype=torch.float64))
        var = torch.nn.functional.softplus(torch.randn(t, b, latent, generator=gen, dtype=torch.float64))
        fast, direct = sel.club_upper_bound(z, mean, var), club_pairwise(z, mean, var)
        torch.testing.assert_close(fast, direct, rtol=1e-12, atol=1e-12)
        (grad_fast,) = torch.autograd.grad(fast, z)
        (grad_direct,) = torch.autograd.grad(club_pairwise(z, mean, var), z)
        torch.testing.assert_close(grad_fast, grad_direct, rtol=1e-10, atol=1e-12)


def test_focal_loss_hand_computed():
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    # pairs (0,1): D = 1; (0,2): D = 2; (1,2): D = 1; distinct tasks: mean of 1 / (D + 0.1) over 3 pairs
    repel = (1 / 1.1 + 1 / 2.1 + 1 / 1.1) / (3 + 1e-3)
    torch.testing.assert_close(sel.focal_distance_metric_loss(z, torch.tensor([5, 7, 9])), torch.tensor(repel))
    # tasks 0 and 1 the same: one attracting pair sqrt(1 + 1e-3), two repelling
    mixed = np.sqrt(1.001) / 1.001 + (1 / 2.1 + 1 / 1.1) / 2.001
    torch.testing.assert_close(
        sel.focal_distance_metric_loss(z, torch.tensor([5, 5, 9])), torch.tensor(mixed, dtype=torch.float32)
    )


def test_weights_and_actor_loss_hand_computed():
    obs, z = torch.zeros(3, 1), torch.zeros(3, 1)
    data_action = torch.tensor([[0.5], [-0.5], [0.0]])
    policy_action = torch.tensor([[0.2], [0.1], [-0.3]], requires_grad=True)
    q1_data, v_data = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.0, 0.0, 4.0])  # advantages +1, -2, -1

    def actor(o, zz):
        return policy_action

    def critic(o, a, zz, members):
        return (2 * a + 1).T  # Q1(s, pi) = 2 pi + 1 = 1.4, 1.2, 0.4: mean 1.0

    batch = (obs, data_action)
    # w = (1, 0, 0); BC = (0.2 - 0.5)^2 / 3 = 0.03; dataset normalisation: lambda = 2.5 / mean|1, -2, 3| = 1.25
    loss, w_mean, lam = sel.weighted_actor_loss(actor, critic, batch, z, q1_data, v_data, 2.5, "dataset", True)
    torch.testing.assert_close(loss, torch.tensor(-1.25 * 1.0 + 0.03))
    torch.testing.assert_close(w_mean, torch.tensor(1 / 3))
    torch.testing.assert_close(lam, torch.tensor(1.25))
    # policy normalisation (TD3+BC): lambda = 2.5 / mean|1.4, 1.2, 0.4| = 2.5
    loss, _, lam = sel.weighted_actor_loss(actor, critic, batch, z, q1_data, v_data, 2.5, "policy", True)
    torch.testing.assert_close(loss, torch.tensor(-2.5 + 0.03))
    # unweighted (w = 1): BC = (0.09 + 0.36 + 0.09) / 3 = 0.18
    loss, w_mean, _ = sel.weighted_actor_loss(actor, critic, batch, z, q1_data, v_data, 2.5, "dataset", False)
    torch.testing.assert_close(loss, torch.tensor(-1.25 + 0.18))
    assert w_mean == 1.0
    # the gradient reaches the policy's actions: d/dpi = -lambda * 2 / 3 + 2 (pi - a) / 3 on weighted rows
    loss, _, _ = sel.weighted_actor_loss(actor, critic, batch, z, q1_data, v_data, 2.5, "dataset", True)
    (grad,) = torch.autograd.grad(loss, policy_action)
    expected = torch.tensor([[-2.5 / 3 + 2 * (-0.3) / 3], [-2.5 / 3], [-2.5 / 3]])
    torch.testing.assert_close(grad, expected)


def random_batch(n: int, terminations: list) -> tuple:
    """(s, a, r, s', d) of n random Point-Robot-shaped transitions, actions in [-1, 1]."""
    return torch.randn(n, 2), torch.rand(n, 2) * 2 - 1, torch.randn(n), torch.randn(n, 2), torch.tensor(terminations)


def test_critic_and_value_regress_onto_the_same_td_target():
    torch.manual_seed(0)
    critic, value_net = sel.TwinCritic(2 + 2 + 3, (8,)), sel.ValueNet(2, 3, (8,))
    actor = sel.Actor(2, 3, (8,), 2)
    n = 5
    batch = random_batch(n, terminations=[0, 0, 1, 0, 1.0])
    z, noise = torch.randn(n, 3), torch.zeros(n, 2)
    critic_loss, value_loss, q1, v = sel.critic_value_losses(critic, critic, actor, value_net, batch, z, noise, 0.9)
    with torch.no_grad():
        next_q = critic(batch[3], actor(batch[3], z), z).min(0).values
        y = batch[2] + 0.9 * (1 - batch[4]) * next_q
        q = critic(batch[0], batch[1], z)
    torch.testing.assert_close(critic_loss, ((q[0] - y) ** 2).mean() + ((q[1] - y) ** 2).mean())
    torch.testing.assert_close(value_loss, ((value_net(batch[0], z) - y) ** 2).mean())
    torch.testing.assert_close(q1, q[0])


def test_twin_critic_members_are_independent_mlps():
    torch.manual_seed(0)
    critic = sel.TwinCritic(5, (7, 7))
    obs, action, z = torch.randn(4, 2), torch.randn(4, 1), torch.randn(4, 2)
    both = critic(obs, action, z)
    x = torch.cat([obs, action, z], -1)
    for m in range(2):
        h = x
        for i, (w, b) in enumerate(zip(critic.weights, critic.biases, strict=True)):
            h = h @ w[m] + b[m, 0]
            h = torch.relu(h) if i < 2 else h
        torch.testing.assert_close(both[m], h.squeeze(-1))
    torch.testing.assert_close(critic(obs, action, z, members=slice(0, 1))[0], both[0])


def test_meta_batch_rows_come_from_their_own_task():
    rows = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 3)
    counts = torch.tensor([2, 5, 3])
    data = sel.OfflineData(rows, torch.tensor([0, 2, 7]), counts, np.zeros(1), np.ones(1), 1, 1, 2, {})
    sample = sel.sample_rows(data, torch.tensor([2, 0, 1]), 500, torch.Generator().manual_seed(0))
    first = sample[..., 0]
    assert set(first[0].tolist()) == {7.0, 8.0, 9.0}
    assert set(first[1].tolist()) == {0.0, 1.0}
    assert set(first[2].tolist()) == {2.0, 3.0, 4.0, 5.0, 6.0}


# ------------------------------------------------------------------------------------------------
# Data loading: the same numbers as the earlier whole-dataset loader (bench_load.py), in about the data's own memory
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["point-robot", "hopper-rand-params"])
def test_loader_rows_are_bit_identical_to_the_old_formula(tiny_data, tmp_path, env_id):
    """Task by task into one array, statistics from running sums: the same rows (bit for bit), offsets, counts,
    normalisation statistics and fingerprint as concatenating every task's arrays, normalised or not, with the
    statistics computed or given by a checkpoint. Hopper: 11 state dims of scales 1e-2..1e2, (s, a, r, s') context."""
    bench_load = load_script("benchmarks/bench_load.py", "bench_load")  # its synthetic data, the old loader verbatim
    data_dir = tiny_data
    if env_id != "point-robot":
        data_dir = tmp_path
        bench_load.write_synthetic_dataset(tmp_path, env_id, transitions_per_task=2_000)
    cpu, obs_dim = torch.device("cpu"), omrl_envs.FAMILIES[env_id].obs_dim
    checkpoint_stats = (np.linspace(-1, 1, obs_dim), np.full(obs_dim, 0.3))
    for normalize, obs_stats in ((False, None), (True, None), (False, checkpoint_stats)):
        new = sel.load_offline_data(env_id, str(data_dir), normalize, cpu, obs_stats)
        old = bench_load.old_load_offline_data(sel, env_id, str(data_dir), normalize, cpu, obs_stats)
        assert new.rows.dtype == torch.float32 and new.rows.is_contiguous()
        assert torch.equal(new.rows, old.rows), (normalize, obs_stats is not None)
        assert torch.equal(new.offsets, old.offsets) and torch.equal(new.counts, old.counts)
        np.testing.assert_array_equal(new.obs_mean, old.obs_mean)
        np.testing.assert_array_equal(new.obs_std, old.obs_std)
        assert new.fingerprint == old.fingerprint
        assert (new.obs_dim, new.act_dim, new.context_dim) == (old.obs_dim, old.act_dim, old.context_dim)


def test_loader_peak_memory_is_about_the_dataset_size():
    """benchmarks/bench_load.py on a 0.2 GB Humanoid-shaped dataset, each loader in a fresh process: the loader's
    peak is at most 1.3 times the dataset (measured 1.05 at 2 GB); the old one's was above 3 (3.7 at 2 GB)."""
    proc = run_script("benchmarks/bench_load.py", "--size-gb", "0.2", "--json", timeout=300)
    results = {r["loader"]: r for r in map(json.loads, proc.stdout.strip().splitlines())}
    assert results["new"]["ratio"] <= 1.3, results["new"]
    assert results["old"]["ratio"] > 2.5, results["old"]  # the measurement sees the difference
    assert results["new"]["rows_sha256"] == results["old"]["rows_sha256"]


COUNT_FLOPS = """
import json, sys, tempfile
sys.path.insert(0, "benchmarks")
import bench_select
cfg = {"script": "select.py", "env_id": "hopper-rand-params", "preset": "cpu", "data_dir": sys.argv[1]}
counts = []
for n in (2, 4):
    with tempfile.TemporaryDirectory() as runs:
        counts.append(bench_select.count_step({**cfg, "runs_dir": runs}, n)["flops"])
print(json.dumps(counts))
"""


def test_bench_flop_count_leaves_the_evaluation_out(tmp_path):
    """bench_select.py --flops counts a run up to its last optimizer step: on a terminating family the evaluation
    (episodes that end where each run's policy falls, so a different number of env steps after 2 and after 4
    training steps) is left out, so that 4 steps count exactly twice the FLOPs of 2 (loading runs no matmul)."""
    bench_load = load_script("benchmarks/bench_load.py", "bench_load")
    bench_load.write_synthetic_dataset(tmp_path, "hopper-rand-params", transitions_per_task=2_000)
    proc = subprocess.run([sys.executable, "-c", COUNT_FLOPS, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    two, four = json.loads(proc.stdout.strip().splitlines()[-1])
    assert two > 0 and four == 2 * two


def random_chunks(n: int, width: int, rounds: int, seed: int) -> list[dict]:
    """Rounds of new context rows {env: (length, width)} as the meta-test adds them: lengths 1-40, some envs
    skipping a round (a run that has ended), env 0 never getting any."""
    g = torch.Generator().manual_seed(seed)
    chunks = []
    for r in range(rounds):
        lengths = torch.randint(1, 41, (n,), generator=g).tolist()
        chunks.append({i: torch.randn(lengths[i], width, generator=g) for i in range(1, n) if (i + r) % 3})
    return chunks


def whole_contexts(chunks: list[dict], n: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunks concatenated per env, in order: padded (n, max_len, width), counts (n,)."""
    return sel.padded([[c[i] for c in chunks if i in c] for i in range(n)], width, "cpu")


@pytest.mark.parametrize("name", ["select", "csro", "focal"])
def test_running_mean_z_equals_the_mean_over_the_whole_context(name):
    """The meta-test's running sums (Summed, mean_z) against the mean embedding of each whole context encoded at once
    (what every inference computed before the running form), on random contexts added in rounds: equal to 1e-6; the
    prior z = 0 for an empty context."""
    m = sel if name == "select" else load_script(f"baselines/{name}.py", f"baseline_{name}")
    torch.manual_seed(0)
    encoder = m.ContextEncoder(5, (32, 32), 8)  # reads the first 5 of 7 columns
    z_inference = sel.Summed(lambda rows: encoder(rows[..., :5]), m.mean_z, 8, 7, "cpu")
    chunks = random_chunks(6, 7, rounds=12, seed=1)
    state = z_inference.prior(6)
    torch.testing.assert_close(z_inference.z(state), torch.zeros(6, 8), rtol=0, atol=0)
    for k in range(len(chunks)):
        state = z_inference.add(state, chunks[k])
        context, counts = whole_contexts(chunks[: k + 1], 6, 7)
        with torch.no_grad():
            mask = (torch.arange(context.shape[1]) < counts[:, None]).float()[..., None]
            whole = (encoder(context[..., :5]) * mask).sum(1) / counts.clamp(min=1)[:, None]
        assert state[1].tolist() == counts.tolist()
        torch.testing.assert_close(z_inference.z(state), whole, rtol=0, atol=1e-6)
    assert z_inference.z(state)[0].abs().max() == 0  # env 0 never got a row: still the prior


# ------------------------------------------------------------------------------------------------
# Meta-test protocols, in process, with a scripted policy
# ------------------------------------------------------------------------------------------------
def test_protocol_budgets_and_contexts(tiny_data):
    """Point-Robot: 20 scored episodes of 20 steps per (task, run); contexts as benchmark.md §3 says."""
    data = sel.load_offline_data("point-robot", str(tiny_data), False, torch.device("cpu"))
    seen = []

    def infer_z_fn(context, counts):
        seen.append(counts.clone())
        return torch.zeros(len(counts), 2)

    z_inference = sel.Reencoded(infer_z_fn, data.rows.shape[1], "cpu")

    def toward_goal_of_z(obs, z):  # a deterministic policy that walks right
        return torch.tensor([[1.0, 0.0]]).expand(len(obs), 2)

    noise = (0.3, -0.5, 0.5)
    for protocol in sel.PROTOCOLS:
        seen.clear()
        results = sel.evaluate(toward_goal_of_z, z_inference, data, "point-robot", (protocol,), 1, 0, noise, "cpu")
        result = results[protocol]
        assert len(result["per_round"]) == 20 and len(result["per_task"]) == 10
        # walking right along y = 0 is task-blind: every scored episode returns the same on a task
        assert all(len(set(np.round(run, 9))) == 1 for run in result["per_run"])
        final_counts = seen[-1].tolist()
        if protocol == "offline":
            assert final_counts == [400] * 10  # one horizon of offline data before each of 20 scored episodes
        if protocol == "online-prior":
            assert final_counts == [400] * 10  # the scored episodes themselves
        if protocol in ("online-random", "online-proximal"):
            assert final_counts == [400] * 10  # 20 exploration episodes, re-inferred before each scored one
            assert [c.tolist() for c in seen[1:4]] == [[0] * 10, [20] * 10, [40] * 10]  # prior, then growing
            assert result["exploration_transitions"] == [[20] * 20] * 10  # one horizon per round


@pytest.mark.parametrize("k", [1, 2])
def test_reinfer_timing_round_and_csro(tiny_data, monkeypatch, k):
    """reinfer="round": each scored episode uses z from all exploration rounds so far, its own included; "csro"
    (CSRO's code): z is re-inferred after each scored episode once k horizons are scored, so with k = 2 the first two
    scored episodes use the prior and the third z from two rounds (CSRO's Cheetah schedule, at Point-Robot's size)."""
    monkeypatch.setitem(sel.PRIOR_EPISODES, "point-robot", k)
    data = sel.load_offline_data("point-robot", str(tiny_data), False, torch.device("cpu"))
    seen = []

    def infer_z_fn(context, counts):  # z = the number of context transitions behind it
        return counts.float()[:, None].expand(len(counts), 2)

    z_inference = sel.Reencoded(infer_z_fn, data.rows.shape[1], "cpu")

    def policy(obs, z):
        seen.append(float(z[0, 0]))
        return torch.zeros(len(obs), 2)

    scored_z = {}
    for reinfer in sel.REINFER:
        seen.clear()
        sel.evaluate(policy, z_inference, data, "point-robot", ("online-proximal",), 1, 0, (0.3, -0.5, 0.5), "cpu",
                     reinfer=reinfer)  # fmt: skip
        rounds = np.array(seen).reshape(20, 2, 20)  # (round, exploration / scored episode, step)
        assert (rounds == rounds[..., :1]).all()  # z is fixed within an episode
        scored_z[reinfer] = rounds[:, 1, 0].tolist()
        if reinfer == "csro":
            assert rounds[:, 0, 0].tolist() == [0.0] * k + [20.0 * r for r in range(k, 20)]  # explores with that z
    assert scored_z["round"] == [20.0 * (r + 1) for r in range(20)]
    assert scored_z["csro"] == [0.0] * k + [20.0 * r for r in range(k, 20)]


def test_exploration_actions_follow_the_protocol(tiny_data):
    data = sel.load_offline_data("point-robot", str(tiny_data), False, torch.device("cpu"))
    envs = [omrl_envs.make_env("point-robot", t) for t in (2, 6)]
    active, z = np.array([True, True]), torch.zeros(2, 1)

    def still(obs, z):
        return torch.zeros(len(obs), 2)

    rng = np.random.default_rng(0)
    for mode, check in (
        (sel.DETERMINISTIC, lambda a: np.all(a == 0)),
        (sel.RANDOM, lambda a: np.abs(a).max() > 0.9 and np.abs(a).max() <= 1),
        (sel.PROXIMAL, lambda a: 0 < np.abs(a).max() <= 0.2 + 1e-9),  # clip(N(0, 1), -0.2, 0.2) around pi = 0
    ):
        modes = lambda t, mode=mode: np.full(2, mode)
        _, lengths, rows, _ = sel.rollout(envs, active, z, modes, still, None, rng, data, (1.0, -0.2, 0.2), None, "cpu")
        actions = torch.cat(rows)[:, 2:4].numpy()
        assert lengths.tolist() == [20, 20] and check(actions), (mode, actions[:3])


def test_online_random_switches_to_the_policy_per_step():
    """CSRO's switch: uniform random while spent + t < budget / 2, per step of the round, per run."""
    spent = np.array([0, 200, 300, 480])
    modes = np.array([sel.exploration_modes("online-random", spent, t, 600) for t in range(200)])  # (t, run)
    assert (modes[:, 0] == sel.RANDOM).all()  # 0 + 199 < 300
    assert (modes[:100, 1] == sel.RANDOM).all() and (modes[100:, 1] == sel.STOCHASTIC).all()  # 100 random + 100 pi
    assert (modes[:, 2:] == sel.STOCHASTIC).all()
    assert (sel.exploration_modes("online-proximal", spent, 0, 600) == sel.PROXIMAL).all()


def test_an_exploration_round_holds_one_horizon_across_early_ends(tiny_data):
    """An episode that ends early is followed by another until the round holds one horizon; the last one is cut."""
    data = sel.load_offline_data("point-robot", str(tiny_data), False, torch.device("cpu"))

    class Falls(omrl_envs.PointRobotEnv):  # a Point-Robot that terminates after 7 steps
        def reset(self, *, seed=None, options=None):
            self.steps = 0
            return super().reset(seed=seed, options=options)

        def step(self, action):
            self.steps += 1
            obs, reward, _, truncated, info = super().step(action)
            return obs, reward, self.steps == 7, truncated, info

    envs = [Falls() for _ in range(3)]
    active, z, rng = np.array([True, False, True]), torch.zeros(3, 1), np.random.default_rng(0)
    random = lambda t: np.full(3, sel.RANDOM)
    still = lambda obs, z: torch.zeros(len(obs), 2)
    returns, lengths, rows, _ = sel.rollout(envs, active, z, random, still, None, rng, data, (0.3, -0.5, 0.5), None,
                                            "cpu", steps=20)  # fmt: skip
    assert [len(r) for r in rows] == [20, 0, 20] and lengths.tolist() == [7, 0, 7]
    terminations = rows[0][:, -1].tolist()
    assert [i for i, d in enumerate(terminations) if d] == [6, 13]  # episodes of 7, 7 and a cut one of 6
    assert returns[0] == pytest.approx(float(rows[0][:7, 4].sum()))  # the first episode's return


def test_an_oracle_policy_reaches_the_oracle_return(tiny_data):
    """The meta-test scores a policy that knows the goal (through z) at the registry's oracle return."""
    data = sel.load_offline_data("point-robot", str(tiny_data), False, torch.device("cpu"))
    goals = torch.tensor([omrl_envs.task_list("point-robot")[t]["goal"] for t in omrl_envs.TEST_TASKS])

    def infer_goal(context, counts):  # z = the goal that explains the context's rewards: |s' - g| = -r
        z = torch.zeros(len(counts), 2)
        for i in range(len(counts)):
            rows = context[i, : counts[i]]
            if len(rows):
                mismatch = [float(((rows[:, 5:7] - g).norm(dim=1) + rows[:, 4]).pow(2).sum()) for g in goals]
                z[i] = goals[int(np.argmin(mismatch))]
        return z

    def greedy(obs, z):
        return ((z - obs) / 0.1).clamp(-1, 1)

    z_inference = sel.Reencoded(infer_goal, data.rows.shape[1], "cpu")
    results = sel.evaluate(greedy, z_inference, data, "point-robot", ("offline",), 1, 0, (0.3, -0.5, 0.5), "cpu")
    oracle = np.mean([omrl_envs.oracle_point_robot_return(t) for t in omrl_envs.TEST_TASKS])
    assert results["offline"]["return"] == pytest.approx(oracle, abs=1e-4)
    assert results["offline"]["context_shift"] >= 0


# ------------------------------------------------------------------------------------------------
# The script, run as a user runs it
# ------------------------------------------------------------------------------------------------
def test_run_record_and_every_protocol(tiny_run):
    for name in ("args.json", "checkpoint.pt", "final_eval.json", "eval_history.jsonl"):
        assert (tiny_run / name).is_file(), name
    assert list(tiny_run.glob("events.out.tfevents.*"))
    final = assert_tiny_evaluation_record(tiny_run, sel.PROTOCOLS)
    for result in final["protocols"].values():
        assert result["return"] == pytest.approx(np.mean(list(result["per_task"].values())))
    checkpoint = torch.load(tiny_run / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert checkpoint["step"] == 40 and checkpoint["args"]["num_train_steps"] == 40
    assert set(checkpoint["networks"]) >= {"context_encoder", "club_net", "actor", "critic", "value_net"}
    assert set(checkpoint["optimizers"]) == {"context_encoder", "club_net", "actor", "critic", "value_net"}
    assert "obs_mean" in checkpoint and "obs_std" in checkpoint
    tags = scalars(tiny_run)
    for key in (
        "losses/critic_loss", "losses/actor_loss", "losses/value_loss", "losses/focal_loss", "losses/club_loss",
        "losses/club_model_loss", "charts/bc_weight_mean", "charts/SPS", "eval/context_shift",
        *(f"eval/{p}/return" for p in sel.PROTOCOLS), *(f"eval/{p}/context_shift" for p in sel.PROTOCOLS),
        "eval/online-proximal/round_return/01", "eval/online-proximal/round_return/20",
    ):  # fmt: skip
        assert key in tags, key
    assert [step for step, _ in tags["losses/critic_loss"]] == [10, 20, 30, 40]
    assert [step for step, _ in tags["eval/offline/return"]] == [20, 40]
    assert sel.HEADLINE_PROTOCOL == "online-proximal"  # SELECT's paper's protocol, printed last
    headline = final["protocols"]["online-proximal"]["return"]
    assert (tiny_run.parent / "tiny.stdout").read_text().strip().splitlines()[-1].endswith(f", return {headline:.2f}")


def test_reevaluating_a_checkpoint_reproduces_the_logged_numbers(tiny_run, tmp_path):
    output = tmp_path / "reeval.json"
    run_script("select.py", "--eval-checkpoint", tiny_run / "checkpoint.pt", "--eval-output", output, timeout=120)
    final = json.loads((tiny_run / "final_eval.json").read_text())
    assert without_z(json.loads(output.read_text())["protocols"]) == final["protocols"]  # exactly, every float
    # meta-test options can be changed on re-evaluation (here sigma_test): the numbers then differ
    run_script(
        "select.py", "--eval-checkpoint", tiny_run / "checkpoint.pt", "--eval-output", output,
        "--protocols", "online-proximal", "--proximal-noise-std", "0.1", timeout=120,
    )  # fmt: skip
    again = json.loads(output.read_text())
    assert again["args"]["proximal_noise_std"] == 0.1 and set(again["protocols"]) == {"online-proximal"}
    assert again["protocols"]["online-proximal"] != final["protocols"]["online-proximal"]


def test_each_protocol_alone_reproduces_its_logged_number(tiny_run, tmp_path):
    """Every protocol's random streams are its own ([eval_seed, protocol]): re-evaluating one protocol alone gives
    the number the run logged with all four."""
    final = json.loads((tiny_run / "final_eval.json").read_text())
    for protocol in sel.PROTOCOLS:
        output = tmp_path / f"{protocol}.json"
        run_script("select.py", "--eval-checkpoint", tiny_run / "checkpoint.pt", "--eval-output", output,
                   "--protocols", protocol, timeout=120)  # fmt: skip
        assert without_z(json.loads(output.read_text())["protocols"]) == {protocol: final["protocols"][protocol]}


def test_a_checkpoint_refuses_another_dataset(tiny_run, tmp_path):
    """--eval-checkpoint (and --resume) on data other than the run's stops in one line naming both fingerprints."""
    other = tmp_path / "other"
    write_scripted_point_robot_dataset(other, seed=1)
    saved = json.loads((tiny_run / "final_eval.json").read_text())["dataset"]
    proc = run_script("select.py", "--eval-checkpoint", tiny_run / "checkpoint.pt", "--data-dir", other, check=False)
    assert_one_line_error(proc, saved["content_hash"][:12], "--data-dir")
    current = omrl_envs.dataset_fingerprint(*omrl_envs.load_dataset(other / "point-robot", "point-robot"))
    assert current["content_hash"] != saved["content_hash"] and current["content_hash"][:12] in proc.stderr


def test_a_checkpoint_saved_on_cuda_reevaluates_and_resumes_on_cpu(tiny_data, tiny_run, tmp_path):
    """A CUDA run's checkpoint holds CUDA tensors (mapped to the CPU by torch.load) and a CUDA generator state (16
    bytes, Philox): simulated here by that state where the tiny run trained on the CPU (a real one where it trained
    on a GPU); re-evaluated and resumed in processes that see no GPU, it gives the logged numbers (exactly from a CPU
    run; from a CUDA run to about 1e-6, the last bits of its matmuls), and resume reseeds and goes on."""
    run_dir = tmp_path / "from_cuda"
    shutil.copytree(tiny_run, run_dir)
    final = json.loads((tiny_run / "final_eval.json").read_text())
    if final["device"] == "cpu":
        checkpoint = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
        checkpoint["generator"] = torch.zeros(16, dtype=torch.uint8)  # torch.cuda's generator state: seed and offset
        torch.save(checkpoint, run_dir / "checkpoint.pt")
    cpu_only = {"CUDA_VISIBLE_DEVICES": ""}
    output = tmp_path / "reeval.json"
    run_script("select.py", "--eval-checkpoint", run_dir / "checkpoint.pt", "--eval-output", output, timeout=120,
               env=cpu_only)  # fmt: skip
    reevaluated = json.loads(output.read_text())
    assert reevaluated["device"] == "cpu"
    if final["device"] == "cpu":
        assert without_z(reevaluated["protocols"]) == final["protocols"]  # every field, exactly
    else:
        for protocol, result in final["protocols"].items():
            again = np.asarray(reevaluated["protocols"][protocol]["per_run"])
            np.testing.assert_allclose(again, np.asarray(result["per_run"]), rtol=0, atol=1e-5, err_msg=protocol)
    proc = run_script("select.py", "--data-dir", tiny_data, "--runs-dir", tmp_path, "--run-name", "from_cuda",
                      "--resume", "--num-train-steps", "60", timeout=300, env=cpu_only)  # fmt: skip
    assert "reseeded from seed 1, step 40" in proc.stdout
    assert json.loads((run_dir / "final_eval.json").read_text())["step"] == 60


def test_exploration_rounds_hold_a_horizon_on_a_terminating_family(tmp_path):
    """Hopper (terminates when it falls) at tiny size, data from collect_sac.py, --preset cpu with its sizes
    overridden: every exploration round of the two online-exploration protocols holds one horizon (200) of
    transitions, although its episodes end early; the resolved options are printed and stored."""
    collect = ["--total-steps", "60", "--random-steps", "20", "--checkpoint-every", "20", "--first-checkpoint", "40",
               "--episodes-per-checkpoint", "1", "--hidden-dim", "16", "--batch-size", "16"]  # fmt: skip
    run_script("collect_sac.py", "--env-id", "hopper-rand-params", "--data-dir", tmp_path, "--runs-dir",
               tmp_path / "collect_runs", *collect, timeout=300)  # fmt: skip
    protocols = ("online-random", "online-proximal")
    proc = select_run(
        tmp_path, tmp_path, "hopper", "--env-id", "hopper-rand-params", "--preset", "cpu", "--num-train-steps", "10",
        "--eval-every", "10", "--protocols", *protocols, timeout=600,
    )  # fmt: skip
    resolved = json.loads((tmp_path / "hopper" / "args.json").read_text())
    assert resolved["preset"] == "cpu" and resolved["num_train_steps"] == 10  # the flag overrides the preset's 7,000
    assert resolved["meta_batch_size"] == 4 and resolved["normalize_states"] is True and resolved["gamma"] == 0.99
    first_line = proc.stdout.splitlines()[0]
    assert first_line.startswith("hopper-rand-params, preset cpu: context_size 16, batch_size 16"), first_line
    final = json.loads((tmp_path / "hopper" / "final_eval.json").read_text())
    assert final["args"] == resolved
    for protocol in protocols:
        result = final["protocols"][protocol]
        explored, scored = result["exploration_transitions"], result["per_run"]
        assert [len(rounds) for rounds in explored] == [len(runs) for runs in scored]  # a round per scored episode
        assert all(n >= 200 for rounds in explored for n in rounds)
        assert max(len(runs) for runs in scored) > 3  # scored episodes end early: more than 600 / 200 rounds
        assert result["per_round_runs"][0] == 10 and result["per_round_runs"] == sorted(result["per_round_runs"])[::-1]


def test_same_seed_same_losses_and_returns(tiny_data, tiny_run, tmp_path):
    select_run(tiny_data, tmp_path, "again")
    select_run(tiny_data, tmp_path, "other_seed", "--seed", "2")
    first, again, other = scalars(tiny_run), scalars(tmp_path / "again"), scalars(tmp_path / "other_seed")
    for key in first:
        if key.startswith(("losses/", "eval/")):
            assert first[key] == again[key], key
    assert first["losses/critic_loss"] != other["losses/critic_loss"]
    final = json.loads((tiny_run / "final_eval.json").read_text())
    assert json.loads((tmp_path / "again" / "final_eval.json").read_text())["protocols"] == final["protocols"]


def test_resume_continues_exactly(tiny_data, tiny_run, tmp_path):
    """A run stopped at its first checkpoint (step 20) and resumed to step 40 logs the same losses and evaluations and
    ends with the same checkpoint as the uninterrupted run; an existing run or a finished one is refused in one line."""
    first_half = [a if a != "40" else "20" for a in TINY]  # --num-train-steps 20
    run_script("select.py", "--data-dir", tiny_data, "--runs-dir", tmp_path, "--run-name", "resumed", *first_half)
    assert_one_line_error(select_run(tiny_data, tmp_path, "resumed", check=False), "--resume")
    resume = ("select.py", "--data-dir", tiny_data, "--runs-dir", tmp_path, "--run-name", "resumed", "--resume")
    with open(tmp_path / "resumed" / "eval_history.jsonl", "a") as f:
        f.write('{"step": 40, "protoc')  # a line cut short by a kill: dropped on resume
    run_script(*resume, "--num-train-steps", "40")  # every other option comes from the checkpoint
    resumed, straight = tmp_path / "resumed", tiny_run
    final = json.loads((straight / "final_eval.json").read_text())
    assert json.loads((resumed / "final_eval.json").read_text())["protocols"] == final["protocols"]
    history = [json.loads(line) for line in (resumed / "eval_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [20, 40]
    first, again = scalars(straight), scalars(resumed)
    for key in first:
        if key.startswith(("losses/", "eval/")):
            assert first[key] == again[key], key
    a, b = (torch.load(d / "checkpoint.pt", map_location="cpu", weights_only=False) for d in (straight, resumed))
    for name, state in a["networks"].items():
        assert all(torch.equal(state[k], b["networks"][name][k]) for k in state), name
    assert_one_line_error(run_script(*resume, check=False), "has done its 40 steps", "--num-train-steps")


def test_encoder_gets_no_gradient_from_the_rl_losses(tiny_data, tmp_path):
    """With the encoder's own losses switched off, training the RL nets must leave the encoder at its init."""
    select_run(tiny_data, tmp_path, "frozen", "--focal-weight", "0", "--club-weight", "0", "--protocols", "offline")
    checkpoint = torch.load(tmp_path / "frozen" / "checkpoint.pt", map_location="cpu", weights_only=False)
    torch.manual_seed(1)  # the script's seeding; the context encoder is the first network it builds
    initial = sel.ContextEncoder(2 + 2 + 1, (16, 16), 4).state_dict()
    trained = checkpoint["networks"]["context_encoder"]
    assert all(torch.equal(initial[k], trained[k]) for k in initial)
    assert not torch.equal(initial["net.0.weight"].new_tensor(0), trained["net.0.weight"].sum())  # a real net
    actor = torch.manual_seed(1) and None  # the RL nets did move: the check above is not vacuous
    actor_initial = checkpoint["networks"]["actor_target"]
    assert not all(torch.equal(actor_initial[k], checkpoint["networks"]["actor"][k]) for k in actor_initial) or actor


def test_short_run_beats_the_random_policy(tmp_path_factory):
    """A learning signal: a short run on a small scripted dataset clearly beats uniform random actions (-20.4)."""
    data_dir = tmp_path_factory.mktemp("learn")
    write_scripted_point_robot_dataset(data_dir, checkpoints=6, episodes=10, seed=1)
    runs_dir = tmp_path_factory.mktemp("learn_runs")
    run_script(
        "select.py", "--data-dir", data_dir, "--runs-dir", runs_dir, "--run-name", "learn",
        "--num-train-steps", "1500", "--eval-every", "1500", "--log-every", "500", "--meta-batch-size", "8",
        "--batch-size", "64", "--context-size", "64", "--encoder-hidden", "64", "64", "--rl-hidden", "64", "64",
        "--protocols", "offline", timeout=300,
    )  # fmt: skip
    final = json.loads((runs_dir / "learn" / "final_eval.json").read_text())["protocols"]
    random_return = -20.4  # benchmark.md §4: uniform random actions on the test tasks
    assert final["offline"]["return"] > random_return + 6, final


def test_nan_in_a_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    proc = select_run(
        tiny_data, tmp_path, "diverge", "--learning-rate", "1e30", "--eval-every", "1", "--log-every", "1",
        "--protocols", "offline", check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "non-finite", "last good checkpoint")
    checkpoint = torch.load(tmp_path / "diverge" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert checkpoint["step"] >= 1
    assert all(p.isfinite().all() for net in checkpoint["networks"].values() for p in net.values())


# ------------------------------------------------------------------------------------------------
# Errors: one line, no traceback
# ------------------------------------------------------------------------------------------------
def test_unknown_env_id(tmp_path):
    proc = run_script("select.py", "--env-id", "point-robt", "--data-dir", tmp_path, check=False)
    assert_one_line_error(proc, "unknown env id 'point-robt'")


def test_missing_dataset_without_its_collector_names_the_command(tmp_path):
    """A clone without collect_sac.py cannot build a missing dataset: one line that names the command."""
    for name in ("select.py", "omrl_envs.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "select", tmp_path / "select")
    proc = run_script("select.py", "--env-id", "cheetah-vel", "--data-dir", "fresh", check=False, cwd=tmp_path)
    assert_one_line_error(proc, "no collect_sac.py", "python collect_sac.py --env-id cheetah-vel --data-dir fresh")


def test_corrupt_dataset(tiny_data, tmp_path):
    broken = tmp_path / "data"
    shutil.copytree(tiny_data, broken)
    omrl_envs.task_file(broken / "point-robot", 7).write_bytes(b"not an npz file")
    proc = run_script("select.py", "--data-dir", broken, "--runs-dir", tmp_path, check=False)
    assert_one_line_error(proc, "task_07.npz", "corrupt")
    manifest = json.loads((tiny_data / "point-robot" / "manifest.json").read_text())
    shutil.copy(omrl_envs.task_file(tiny_data / "point-robot", 7), omrl_envs.task_file(broken / "point-robot", 7))
    omrl_envs.write_manifest(broken / "point-robot", {**manifest, "complete": False})
    proc = run_script("select.py", "--data-dir", broken, "--runs-dir", tmp_path, check=False)
    assert_one_line_error(proc, "incomplete", "collect_sac.py --env-id point-robot")


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--num-train-steps", "-5"], "--num-train-steps must be positive"),
        (["--context-size", "0"], "--context-size must be positive"),
        (["--meta-batch-size", "31"], "--meta-batch-size must be at most 30"),
        (["--proximal-noise-std", "-0.1"], "sigma_test"),
        (["--proximal-noise-min", "0.5", "--proximal-noise-max", "0.1"], "--proximal-noise-min"),
        (["--protocols", "offline", "online-magic"], "unknown protocol 'online-magic'"),
        (["--bc-weighting", "half"], "--bc-weighting"),
        (["--q-normalization", "both"], "--q-normalization"),
        (["--gamma", "1.0"], "--gamma"),
        (["--rl-hidden", "0"], "--rl-hidden"),
        (["--preset", "gpu"], "unknown --preset 'gpu': choose one of cpu, reference"),
        (["--reinfer", "later"], "unknown --reinfer 'later': choose one of round, csro"),
    ],
)
def test_bad_flag_values(tiny_data, tmp_path, flags, fragment):
    proc = run_script("select.py", "--data-dir", tiny_data, "--runs-dir", tmp_path, *flags, check=False)
    assert_one_line_error(proc, fragment)
    assert not list(tmp_path.iterdir())  # nothing written


def test_unreadable_checkpoint(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    proc = run_script("select.py", "--eval-checkpoint", tmp_path / "checkpoint.pt", check=False)
    assert_one_line_error(proc, "not a readable checkpoint")


def stand_in_collector(env_id: str) -> str:
    """A fast collect_sac.py that checks its command line: Point-Robot, scripted data; a MuJoCo family, the real
    collector at tiny size."""
    from test_collect_sac import TINY_MUJOCO

    text = (
        "import subprocess, sys\nfrom pathlib import Path\nsys.path.insert(1, str(Path(__file__).parent / 'tests'))\n"
        f"assert sys.argv[1:3] == ['--env-id', {env_id!r}] and sys.argv[3] == '--data-dir'\n"
        "print('stand-in collector', flush=True)\n"
    )
    if env_id == "point-robot":
        return text + "from test_select import write_scripted_point_robot_dataset\n" \
            "write_scripted_point_robot_dataset(Path(sys.argv[4]), 2, 2)\n"  # fmt: skip
    command = [sys.executable, str(ROOT / "collect_sac.py")]  # the real one, with its flags and the tiny sizes
    tiny = [str(x) for kv in TINY_MUJOCO.items() for x in kv]
    return text + f"sys.exit(subprocess.run([*{command!r}, *sys.argv[1:], *{tiny!r}]).returncode)\n"


@pytest.mark.parametrize("env_id", ["point-robot", "cheetah-vel"])
def test_missing_dataset_is_built_by_the_collector(tmp_path, env_id):
    """select.py runs collect_sac.py (visibly, with its command line) when the dataset is missing, for every family,
    then trains on it. A stand-in collector keeps this fast; the real one is checked for the same command line."""
    root = tmp_path / "clone"
    root.mkdir()
    for name in ("select.py", "omrl_envs.py"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "select", root / "select")
    shutil.copytree(ROOT / "tests", root / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "collect_sac.py").write_text(stand_in_collector(env_id))
    proc = run_script(
        "select.py", "--env-id", env_id, "--data-dir", "fresh", "--run-name", "auto", *TINY, "--protocols", "offline",
        cwd=root, timeout=600,
    )  # fmt: skip
    assert f"no dataset at fresh/{env_id}: building it (" in proc.stdout
    assert f") with: python collect_sac.py --env-id {env_id} --data-dir fresh" in proc.stdout
    assert "stand-in collector" in proc.stdout
    assert (root / "fresh" / env_id / "manifest.json").is_file()
    assert (root / "runs" / "auto" / "final_eval.json").is_file()
    if (ROOT / "collect_sac.py").is_file():  # the real collector accepts that command line
        help_text = run_script("collect_sac.py", "--help").stdout
        assert "--env-id" in help_text and "--data-dir" in help_text


def test_help_documents_every_option():
    help_text = run_script("select.py", "--help").stdout
    for field in sel.Args.__dataclass_fields__:
        assert f"--{field.replace('_', '-')}" in help_text, field


# ------------------------------------------------------------------------------------------------
# Shared blocks stay byte-identical across scripts
# ------------------------------------------------------------------------------------------------
def shared_blocks(path: Path) -> dict:
    """{name: text} of a script's marked shared blocks, found as tools/sync_shared_blocks.py finds them."""
    sync_tool = load_script("tools/sync_shared_blocks.py", "sync_shared_blocks")  # here: test clones lack tools/
    text = path.read_text()
    return {name: text[a:b] for name, (a, b) in sync_tool.blocks(text).items()}


def test_shared_blocks_are_identical_across_scripts():
    ours = shared_blocks(ROOT / "select.py")
    assert set(ours) == {
        "benchmark constants",
        "presets",
        "command line and checkpoint",
        "data",
        "meta-test",
        "logging and run record",
        "seeding and device",
        "run directory",
        "final record",
    }
    for other in sorted((ROOT / "baselines").glob("*.py")):
        for name, block in shared_blocks(other).items():
            assert name in ours, f"{other.name}: unknown shared block {name!r}"
            assert block == ours[name], (
                f"{other.name}: shared block {name!r} differs from select.py's (python tools/sync_shared_blocks.py)"
            )


def test_diff_line_counts_hand_computed(tmp_path):
    """tools/diff_lines.py (the diff table of docs/baselines.md): one line changed, one removed, two added."""
    diff_tool = load_script("tools/diff_lines.py", "diff_lines")
    (tmp_path / "a.txt").write_text("1\n2\n3\n4\n5\n")
    (tmp_path / "b.txt").write_text("1\nX\n3\n5\n6\n7\n")  # diff: 2c2, 4d3, 5a5,6
    assert diff_tool.changed_lines(str(tmp_path / "a.txt"), str(tmp_path / "b.txt")) == (2, 3, 4)
    page = (ROOT / "docs" / "baselines.md").read_text()
    for row in diff_tool.table().splitlines():  # the page's table is the files' current diff
        assert row in page, f"docs/baselines.md's diff table is stale (python tools/diff_lines.py): {row}"
