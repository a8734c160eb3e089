"""Tests of baselines/corro.py (CORRO) and baselines/borel.py (BOReL): what they add to csro.py on hand-checked inputs,
and each script run as a user runs it (tiny sizes, every protocol, re-evaluation, resume in and after pre-training,
one MuJoCo family)."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import ROOT, load_script, run_script
from test_collect_sac import TINY_MUJOCO
from test_select import (
    TINY,
    assert_headline_printed,
    assert_one_line_error,
    assert_reevaluation_reproduces,
    assert_tiny_evaluation_record,
    random_chunks,
    scalars,
    whole_contexts,
    write_scripted_point_robot_dataset,
)

import omrl_envs

MODULES = {name: load_script(f"baselines/{name}.py", f"baseline_{name}") for name in ("corro", "borel")}
corro, borel = MODULES["corro"], MODULES["borel"]
SCRIPTS = list(MODULES)
HEADLINES = {"corro": "offline", "borel": "online-prior"}
BRAC_ON = ["--alpha", "50", "--alpha-max", "2000"]
# Pre-training at tiny size: 15 steps of the 40 (CORRO: 5 CVAE + 10 InfoNCE steps; BOReL: 15 VAE steps)
PRETRAINING = 15
TINY_PRETRAINING = {
    "corro": ["--generative-steps", "5", "--encoder-steps", "10", "--contrastive-batch-size", "8",
              "--num-negatives", "4", "--generative-batch-size", "16", "--generative-hidden", "8"],
    "borel": ["--vae-steps", "15", "--vae-batch-size", "4", "--segment-length", "40", "--elbo-terms", "4",
              "--decoder-hidden", "8"],
}  # fmt: skip
PRETRAINING_NETWORKS = {
    "corro": ("context_encoder", "generative_model"),
    "borel": ("context_encoder", "reward_decoder"),
}
PRETRAINING_LOSSES = {"corro": ("generative_loss", "infonce_loss"), "borel": ("vae_reward_loss", "vae_kl_loss")}


def pretraining_steps(script: str) -> int:
    """The default pre-training: CORRO 1,000 CVAE + 10,000 InfoNCE steps, BOReL 2,000 VAE steps."""
    return {"corro": 11_000, "borel": 2_000}[script]


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    write_scripted_point_robot_dataset(data_dir)
    return data_dir


def script_run(script, data_dir, runs_dir, name, *extra, steps="40", check=True, timeout=300):
    tiny = [a if a != "40" else steps for a in TINY]  # --num-train-steps
    return run_script(
        f"baselines/{script}.py", "--data-dir", data_dir, "--runs-dir", runs_dir, "--run-name", name, *tiny,
        *TINY_PRETRAINING[script], *extra, check=check, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_runs(tiny_data, tmp_path_factory):
    """One tiny run of each script with BRAC on and every protocol: {script: (run directory, stdout)}."""
    runs_dir = tmp_path_factory.mktemp("runs")
    return {s: (runs_dir / s, script_run(s, tiny_data, runs_dir, s, *BRAC_ON).stdout) for s in SCRIPTS}


@pytest.fixture(scope="module")
def hopper_data(tmp_path_factory):
    """A tiny Hopper dataset from collect_sac.py (episodes end early: terminations and resets)."""
    data_dir = tmp_path_factory.mktemp("hopper")
    flags = [str(x) for kv in TINY_MUJOCO.items() for x in kv]
    run_script(ROOT / "collect_sac.py", "--env-id", "hopper-rand-params", "--data-dir", data_dir, *flags,
               cwd=data_dir, timeout=300)  # fmt: skip
    return data_dir


def write_random_dataset(data_dir, env_id, episodes=2):
    """Uniform random transitions of a family's shape, whole episodes of its horizon (a run's speed and plumbing do
    not depend on the values)."""
    family, rng = omrl_envs.get_family(env_id), np.random.default_rng(0)
    n = episodes * family.horizon
    for task in range(omrl_envs.NUM_TASKS):
        obs = rng.uniform(-1, 1, (n + 1, family.obs_dim)).astype(np.float32)
        data = {
            "observations": obs[:-1], "next_observations": obs[1:],
            "actions": rng.uniform(-1, 1, (n, family.act_dim)).astype(np.float32),
            "rewards": rng.normal(size=n).astype(np.float32), "terminations": np.zeros(n, np.float32),
            "truncations": np.tile(np.eye(family.horizon, dtype=np.float32)[-1], episodes),
            "checkpoint": np.zeros(n, np.int64), "episode": np.repeat(np.arange(episodes), family.horizon),
        }  # fmt: skip
        omrl_envs.write_task_data(data_dir / env_id, env_id, task, data)
    omrl_envs.write_manifest(data_dir / env_id, omrl_envs.make_manifest(env_id, complete=True, synthetic=True))


# ------------------------------------------------------------------------------------------------
# CORRO: the mathematics, checked exactly
# ------------------------------------------------------------------------------------------------
def test_info_nce_hand_computed():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    key = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    negatives = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]], [[1.0, 0.0], [0.0, -1.0]]])
    # scores / 0.1: anchor 1 (6, 0, -10), positive first; anchor 2 (10, 0, -10)
    expected = (-6 + math.log(math.exp(6) + 1 + math.exp(-10))) + (-10 + math.log(math.exp(10) + 1 + math.exp(-10)))
    torch.testing.assert_close(corro.info_nce_loss(query, key, negatives, 0.1), torch.tensor(expected / 2))
    # the temperature divides every score: at temperature 1, anchor 1 alone
    loss = corro.info_nce_loss(query[:1], key[:1], negatives[:1], 1.0)
    torch.testing.assert_close(loss, torch.tensor(-0.6 + math.log(math.exp(0.6) + 1 + math.exp(-1))))


def test_transition_encoder_is_normalised_and_aggregator_masks_the_padding():
    torch.manual_seed(0)
    encoder = corro.ContextEncoder(7, (8,), 3)
    assert torch.allclose(encoder(torch.randn(5, 7)).norm(dim=-1), torch.ones(5))
    aggregator = corro.Aggregator(2)
    with torch.no_grad():
        aggregator.score.weight.copy_(torch.tensor([[1.0, 0.0]]))
        aggregator.score.bias.zero_()
    embeddings = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], [[5.0, 5.0], [5.0, 5.0], [5.0, 5.0]]])
    z = aggregator(embeddings, torch.tensor([2, 0]))
    w = math.exp(1) / (math.exp(1) + 1)  # softmax of the scores (1, 0) over the first two rows; the third is padding
    torch.testing.assert_close(z, torch.tensor([[w, 1 - w], [0.0, 0.0]]))  # an empty context: the prior z = 0
    # infer_z: E1 then E2 over the first counts[i] rows of (s, a, r, s') (the termination column is not read)
    aggregator = corro.Aggregator(3)
    context = torch.randn(2, 4, 8)  # rows (s, a, r, s', d) of Point-Robot's widths
    z = corro.infer_z(encoder, aggregator, context, torch.tensor([4, 2]), 7)
    alone = corro.infer_z(encoder, aggregator, context[1:, :2, :7], torch.tensor([2]), 7)
    torch.testing.assert_close(z[1], alone[0])
    embeddings = encoder(context[0, :, :7])
    weights = torch.softmax(aggregator.score(embeddings).squeeze(-1), 0)
    torch.testing.assert_close(z[0], (weights[:, None] * embeddings).sum(0))


def test_negatives_keep_the_anchors_state_and_action():
    torch.manual_seed(0)
    obs_dim, act_dim = 2, 2
    model = corro.GenerativeModel(obs_dim, act_dim, (8,), 3)
    anchors = torch.randn(5, 2 * obs_dim + act_dim + 1)  # (s, a, r, s')
    s_a, r, s_next = slice(0, 4), 4, slice(5, 7)
    generative = corro.make_negatives(anchors, 6, "generative", model, 0.5, torch.Generator().manual_seed(1))
    assert generative.shape == (5, 6, 7)
    assert torch.equal(generative[..., s_a], anchors[:, None, s_a].expand(-1, 6, -1))  # (s, a) kept
    assert (generative[..., r] != anchors[:, None, r]).all()  # (r, s') changed
    assert (generative[..., s_next] != anchors[:, None, s_next]).all()
    u = torch.randn(5, 6, 3, generator=torch.Generator().manual_seed(1))  # decoded at u ~ N(0, I)
    reward, next_obs = model.decode(anchors[:, None, s_a].expand(-1, 6, -1), u)
    torch.testing.assert_close(generative[..., r], reward)
    torch.testing.assert_close(generative[..., s_next], next_obs)
    noisy = corro.make_negatives(anchors, 6, "reward-noise", model, 0.5, torch.Generator().manual_seed(2))
    assert torch.equal(noisy[..., s_a], anchors[:, None, s_a].expand(-1, 6, -1))  # (s, a, s') kept
    assert torch.equal(noisy[..., s_next], anchors[:, None, s_next].expand(-1, 6, -1))
    noise = torch.randn(5, 6, generator=torch.Generator().manual_seed(2)) * 0.5  # r* = r + N(0, 0.5^2)
    torch.testing.assert_close(noisy[..., r], anchors[:, None, r] + noise)


def test_generative_loss_against_an_independent_computation():
    torch.manual_seed(0)
    model = corro.GenerativeModel(2, 2, (8,), 3)
    transitions = torch.randn(6, 7)
    loss = corro.generative_loss(model, transitions, 0.2, torch.Generator().manual_seed(4))
    mean, logvar = model.encoder(transitions).chunk(2, -1)
    u = mean + torch.exp(logvar / 2) * torch.randn(6, 3, generator=torch.Generator().manual_seed(4))
    out = model.decoder(torch.cat([transitions[:, :4], u], -1))  # (s', r)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, torch.exp(logvar / 2)), torch.distributions.Normal(0.0, 1.0)
    )
    expected = 0.2 * kl.sum(-1).mean() + ((out[:, :2] - transitions[:, 5:]) ** 2).mean()
    expected += ((out[:, 2] - transitions[:, 4]) ** 2).mean()
    torch.testing.assert_close(loss, expected)


# ------------------------------------------------------------------------------------------------
# BOReL: the mathematics, checked exactly
# ------------------------------------------------------------------------------------------------
def kl_1d(m, v, m0, v0):  # KL(N(m, v) || N(m0, v0)) of variances v, v0
    return 0.5 * (v / v0 + (m - m0) ** 2 / v0 - 1 - math.log(v) + math.log(v0))


def test_belief_kl_hand_computed():
    # one segment, latent 1: beliefs (mean, log-variance) at t = 0 (the prior), 1, 2
    beliefs = torch.tensor([[[0.5, math.log(2.0)], [1.0, 0.0], [-1.0, math.log(0.5)]]])
    prior = [kl_1d(0.5, 2, 0, 1), kl_1d(1, 1, 0, 1), kl_1d(-1, 0.5, 0, 1)]
    previous = [kl_1d(0.5, 2, 0, 1), kl_1d(1, 1, 0.5, 2), kl_1d(-1, 0.5, 1, 1)]  # VariBAD: q_{-1} = N(0, I)
    torch.testing.assert_close(borel.belief_kl(beliefs, "prior"), torch.tensor([prior]))
    torch.testing.assert_close(borel.belief_kl(beliefs, "previous"), torch.tensor([previous]))
    two_dims = borel.gaussian_kl(
        torch.tensor([1.0, 0.0]), torch.tensor([0.0, math.log(2)]), torch.zeros(2), torch.zeros(2)
    )
    torch.testing.assert_close(two_dims, torch.tensor(kl_1d(1, 1, 0, 1) + kl_1d(0, 2, 0, 1)))


def test_elbo_terms_and_weighting_hand_computed():
    # 2 segments x 2 ELBO terms x 3 rows; the second segment has 2 rows (its third is padding)
    reward_error = torch.tensor([[[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]], [[4.0, 1.0, 100.0], [2.0, 2.0, 100.0]]])
    state_error = torch.full((2, 2, 3), 0.25)
    mask = torch.tensor([[True, True, True], [True, True, False]])[:, None, :].expand(-1, 2, -1)
    kl = torch.tensor([[0.2, 0.4], [1.0, 0.0]])
    loss, reward_loss, state_loss, kl_loss = borel.elbo_loss(reward_error, state_error, mask, kl, 0.05, 2.0)
    torch.testing.assert_close(reward_loss, torch.tensor(((6 + 1.5) + (5 + 4)) / 2))  # summed over rows and terms
    torch.testing.assert_close(state_loss, torch.tensor((6 * 0.25 + 4 * 0.25) / 2))
    torch.testing.assert_close(kl_loss, torch.tensor((0.6 + 1.0) / 2))  # summed over terms
    torch.testing.assert_close(loss, reward_loss + 2.0 * state_loss + 0.05 * kl_loss)
    loss, _, state_loss, _ = borel.elbo_loss(reward_error, None, mask, kl, 0.05, 2.0)  # no transition decoder
    assert state_loss == 0
    torch.testing.assert_close(loss, reward_loss + 0.05 * kl_loss)


def test_vae_losses_decode_every_row_from_every_belief():
    """The ELBO assembled by vae_losses (every time with --elbo-terms 0), against loops over the times and rows, with
    a stand-in encoder (fixed beliefs, variance about 0: the sample is the mean) and decoder (r = sum of its input)."""
    obs_dim = 1
    transitions = torch.tensor([[[0.1, 0.2, 1.0, 0.3], [0.3, -0.1, 2.0, 0.4], [0.4, 0.5, -1.0, 0.2]]])  # (s, a, r, s')
    mask = torch.tensor([[True, True, False]])  # two rows and a padded one
    means = torch.tensor([[[0.0], [0.5], [1.0], [7.0]]])  # beliefs after 0, 1, 2, 3 rows
    beliefs = torch.cat([means, torch.full_like(means, -80.0)], -1)

    def decoder(x):  # input (s, a, s', m)
        return x.sum(-1, keepdim=True)

    args = borel.Args(elbo_terms=0, kl_to="prior", kl_weight=0.05)
    loss, reward_loss, _, kl_loss = borel.vae_losses(
        lambda x: beliefs, decoder, None, transitions, mask, obs_dim, args, torch.Generator().manual_seed(0)
    )
    expected_reward, expected_kl = 0.0, 0.0
    for t in range(3):  # times 0 (the prior), 1, 2: the segment's length is 2
        for j in range(2):
            s, a, r, s_next = transitions[0, j].tolist()
            expected_reward += (s + a + s_next + means[0, t, 0].item() - r) ** 2
        expected_kl += 0.5 * (math.exp(-80.0) + means[0, t, 0].item() ** 2 - 1 + 80.0)
    torch.testing.assert_close(reward_loss, torch.tensor(expected_reward))
    torch.testing.assert_close(kl_loss, torch.tensor(expected_kl))
    torch.testing.assert_close(loss, reward_loss + 0.05 * kl_loss)
    # sampled ELBO times lie in 0..length: with 50 terms every one of the three times is drawn, never the padding's
    args = borel.Args(elbo_terms=50, kl_to="prior")
    _, _, _, kl_loss = borel.vae_losses(
        lambda x: beliefs, decoder, None, transitions, mask, obs_dim, args, torch.Generator().manual_seed(0)
    )
    assert kl_loss < 50 * 0.5 * (1.0 - 1 + 80.0) + 1e-3  # the belief after 3 rows (mean 7) never counted


def test_belief_at_meta_test_comes_from_the_current_context_alone():
    """The running belief (the GRU's state carried from round to round, each row encoded once) against the encoder
    run over each whole context from the prior (what every inference computed before the running form), on random
    contexts added in rounds: equal to 1e-6; an empty context's belief is the prior, other envs' rows never reach an
    env's belief, and the order of the rows matters."""
    torch.manual_seed(0)
    encoder = borel.ContextEncoder(7, (8, 12), 3)
    running = borel.RunningBelief(encoder, 7, 8, "cpu")  # rows (s, a, r, s', d), Point-Robot's widths
    chunks = random_chunks(5, 8, rounds=8, seed=4)
    state = running.prior(5)
    for k in range(len(chunks)):
        state = running.add(state, chunks[k])
        context, counts = whole_contexts(chunks[: k + 1], 5, 8)
        with torch.no_grad():
            whole = encoder(context[..., :7])[torch.arange(5), counts]  # the belief after each context's last row
        z = running.z(state)
        assert z.shape == (5, 6)  # (mean, log-variance)
        torch.testing.assert_close(z, whole, rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(z[0], encoder.head(torch.zeros(12)))  # env 0 never got a row: the prior (VariBAD's)
    other = dict(chunks[0])
    other[2] = torch.randn(len(other[2]), 8)  # another env's rows change: this env's belief does not
    assert torch.equal(
        running.z(running.add(running.prior(5), other))[1], running.z(running.add(running.prior(5), chunks[0]))[1]
    )
    flipped = running.z(running.add(running.prior(5), {1: chunks[0][1].flip(0)}))
    assert not torch.allclose(flipped[1], running.z(running.add(running.prior(5), {1: chunks[0][1]}))[1])


def test_meta_test_gives_the_belief_every_transition_and_whole_offline_episodes(tiny_data):
    """BOReL's meta-test (RunningBelief.per_step): under every protocol the policy sees z change from one step to the
    next inside an episode (scored and exploration), with no prior episodes; the offline protocol's context is a
    horizon of consecutive rows of the test task's data from an episode start, not i.i.d. rows."""
    data = borel.load_offline_data("point-robot", str(tiny_data), False, torch.device("cpu"))
    torch.manual_seed(0)
    encoder = borel.ContextEncoder(7, (8, 12), 3)
    running = borel.RunningBelief(encoder, 7, data.rows.shape[1], "cpu")
    added = []
    original_add = running.add
    running.add = lambda state, new: (
        added.append({int(i): r.clone() for i, r in new.items()}) or original_add(state, new)
    )
    seen = []

    def policy(obs, z):  # walks right whatever z is; records the z of env 0 at every step
        seen.append(z[0].clone())
        return torch.tensor([[1.0, 0.0]]).expand(len(obs), 2)

    for protocol in borel.PROTOCOLS:
        seen.clear(), added.clear()
        results = borel.evaluate(policy, running, data, "point-robot", (protocol,), 1, 0, (0.3, -0.5, 0.5), "cpu")
        assert len(results[protocol]["per_round"]) == 20
        steps = torch.stack(seen).reshape(-1, 20, 6)  # (episodes of env 0, step, belief)
        changed = (steps[:, 1:] != steps[:, :-1]).any(-1)  # z differs from the step before
        assert changed.all(), f"{protocol}: z held fixed within an episode"
        if protocol == "online-prior":  # no prior episodes: the first episode's second step already has a new z
            assert not torch.equal(steps[0, 1], steps[0, 0])
        if protocol == "offline":
            rounds = [a[0] for a in added if 0 in a and len(a[0]) == 20]  # env 0 (test task 2): one horizon a round
            assert len(rounds) == 20
            task = data.rows[int(data.offsets[2]) : int(data.offsets[2] + data.counts[2])]
            starts = borel.episode_starts(task, data.obs_dim, data.act_dim)
            for rows in rounds:
                first = int(torch.nonzero((task == rows[0]).all(1))[0])
                assert starts[first] and torch.equal(rows, task[first : first + 20])  # consecutive, from a start


def test_segments_are_whole_episodes_of_one_task(tiny_data, hopper_data):
    """Episode starts found from the rows (the shared data block keeps no episode ids) are those of the files'
    episode ids, on scripted Point-Robot data (time limits) and on collect_sac.py's Hopper (terminations)."""
    for data_dir, env_id in ((tiny_data, "point-robot"), (hopper_data, "hopper-rand-params")):
        data = borel.load_offline_data(env_id, str(data_dir), False, torch.device("cpu"))
        for task in (0, 7):
            arrays = omrl_envs.read_task_data(data_dir / env_id, env_id, task)
            expected = np.concatenate([[True], arrays["episode"][1:] != arrays["episode"][:-1]])
            offset, count = int(data.offsets[task]), int(data.counts[task])
            starts = borel.episode_starts(data.rows[offset : offset + count], data.obs_dim, data.act_dim)
            assert starts.numpy().tolist() == expected.tolist(), (env_id, task)
            ends = arrays["terminations"] + arrays["truncations"] > 0  # every episode ends in one or the other
            assert ends[np.flatnonzero(expected)[1:] - 1].all()
        firsts, lengths = borel.make_segments(data, omrl_envs.TRAIN_TASKS, 40)
        assert lengths.sum() == sum(int(data.counts[t]) for t in omrl_envs.TRAIN_TASKS)  # every train row, once
        episode_first = set()
        for t in omrl_envs.TRAIN_TASKS:
            offset, count = int(data.offsets[t]), int(data.counts[t])
            starts = borel.episode_starts(data.rows[offset : offset + count], data.obs_dim, data.act_dim)
            episode_first |= {offset + i for i in torch.nonzero(starts).flatten().tolist()}
        assert set(firsts.tolist()) <= episode_first  # a segment starts with an episode
        ends = (firsts + lengths).tolist()
        task_ends = {int(data.offsets[t] + data.counts[t]) for t in omrl_envs.TRAIN_TASKS}
        assert all(e in episode_first or e in task_ends for e in ends)  # and ends with one, or with its task
        if env_id == "point-robot":  # 20-step episodes: segments of exactly 40 rows
            assert set(lengths.tolist()) == {40}
        index, mask = borel.segment_index(firsts[:3], lengths[:3], int(lengths.max()) + 5)
        for i in range(3):  # the rows of segment i in order, then its last row repeated (masked out)
            rows = list(range(int(firsts[i]), int(firsts[i] + lengths[i])))
            assert index[i].tolist() == rows + [rows[-1]] * (len(index[i]) - len(rows))
            assert mask[i].tolist() == [True] * len(rows) + [False] * (len(index[i]) - len(rows))


# ------------------------------------------------------------------------------------------------
# Both: the per-env tables and the checks
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", SCRIPTS)
def test_per_env_table_fills_every_table_option_for_every_family(script):
    module = MODULES[script]
    left_none = {f.name for f in dataclasses.fields(module.Args) if f.default is None}
    assert set(module.PRESETS) == {"cpu", "reference"} and not set(module.PRESETS["cpu"]) & set(module.ENV_DEFAULTS)
    unset = {"run_name", "eval_checkpoint", "eval_output", "wandb_entity"}  # None means: not given
    assert left_none - set(module.PRESETS["cpu"]) - set(module.ENV_DEFAULTS) == unset
    for preset, sizes in module.PRESETS.items():
        for index, env_id in enumerate(omrl_envs.ENV_IDS):
            args = module.resolve_args(module.Args(env_id=env_id, preset=preset))
            pretraining = args.generative_steps + args.encoder_steps if script == "corro" else args.vae_steps
            for name, values in (sizes | module.ENV_DEFAULTS).items():
                assert len(values) == len(omrl_envs.ENV_IDS), name
                expected = values[index] + pretraining if name == "num_train_steps" else values[index]  # RL + these
                assert getattr(args, name) == expected, (preset, env_id, name)
    assert module.resolve_args(module.Args()).num_train_steps == 20_000 + pretraining_steps(script)
    assert module.resolve_args(module.Args(num_train_steps=300)).num_train_steps == 300  # a flag counts them all
    assert module.resolve_args(module.Args()).alpha_max == 0  # Point-Robot: plain offline SAC, as CSRO's config
    if script == "corro":
        latent = {e: corro.resolve_args(corro.Args(env_id=e)).latent_dim for e in omrl_envs.ENV_IDS}
        assert latent["point-robot"] == 5 and latent["hopper-rand-params"] == 40 and latent["walker-rand-params"] == 32
        assert corro.resolve_args(corro.Args(env_id="walker-rand-params")).encoder_hidden == (128, 128)
        assert corro.resolve_args(corro.Args(negatives="reward-noise")).generative_steps == 0  # no CVAE to train
    else:
        args = borel.resolve_args(borel.Args(env_id="ant-goal"))
        assert args.segment_length == borel.SCORED_BUDGET["ant-goal"] and args.latent_dim == 5
        assert borel.resolve_args(borel.Args()).segment_length == borel.SCORED_BUDGET["point-robot"]


@pytest.mark.parametrize("script, flags, fragment", [
    ("corro", {"negatives": "gt"}, "--negatives must be generative or reward-noise"),
    ("corro", {"num_negatives": 0}, "--num-negatives must be positive"),
    ("corro", {"infonce_temperature": 0.0}, "--infonce-temperature must be positive"),
    ("corro", {"encoder_steps": -1}, "--encoder-steps must be >= 0"),
    ("corro", {"generative_kl_weight": -1.0}, "--generative-kl-weight must be >= 0"),
    ("corro", {"generative_hidden": ()}, "--generative-hidden needs positive widths"),
    ("borel", {"kl_to": "posterior"}, "--kl-to must be previous or prior"),
    ("borel", {"segment_length": 0}, "--segment-length must be positive"),
    ("borel", {"elbo_terms": -1}, "--elbo-terms must be >= 0"),
    ("borel", {"vae_steps": -5}, "--vae-steps must be >= 0"),
    ("borel", {"kl_weight": -0.1}, "--kl-weight must be >= 0"),
    ("borel", {"encoder_hidden": (16, 0)}, "--encoder-hidden needs positive widths"),
])  # fmt: skip
def test_bad_option_values(script, flags, fragment):
    with pytest.raises(SystemExit, match=f"^error: {fragment}"):
        MODULES[script].resolve_args(MODULES[script].Args(**flags))


@pytest.mark.parametrize("script, flags", [("corro", ["--negatives", "gt"]), ("borel", ["--kl-to", "posterior"])])
def test_bad_flag_is_one_line(script, flags, tiny_data, tmp_path):
    proc = run_script(f"baselines/{script}.py", "--data-dir", tiny_data, "--runs-dir", tmp_path, *flags, check=False)
    assert_one_line_error(proc, flags[0])
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_documents_every_option(script):
    help_text = run_script(f"baselines/{script}.py", "--help").stdout
    for field in MODULES[script].Args.__dataclass_fields__:
        assert f"--{field.replace('_', '-')}" in help_text, field


# ------------------------------------------------------------------------------------------------
# The scripts, run as a user runs them
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", SCRIPTS)
def test_run_record_and_every_protocol(script, tiny_runs):
    run_dir, stdout = tiny_runs[script]
    for name in ("args.json", "checkpoint.pt", "final_eval.json", "eval_history.jsonl"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "args.json").read_text())["exp_name"] == script
    final = assert_tiny_evaluation_record(run_dir, MODULES[script].PROTOCOLS)  # evaluations at 20 and 40 only
    checkpoint = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert checkpoint["step"] == 40 and checkpoint["args"]["alpha_max"] == 2000
    assert checkpoint["phase"] == (3 if script == "corro" else "rl")
    assert set(checkpoint["networks"]) >= {*PRETRAINING_NETWORKS[script], "actor", "critic", "value_net"}
    assert 0 < float(checkpoint["brac_alpha"]) != 50  # adapted
    tags = scalars(run_dir)
    for key in (
        "losses/critic_loss", "losses/actor_loss", "losses/value_loss", "losses/dual_critic_loss", "charts/divergence",
        "charts/brac_alpha", "charts/SPS", "charts/z_norm", *(f"losses/{k}" for k in PRETRAINING_LOSSES[script]),
        *(f"eval/{p}/return" for p in MODULES[script].PROTOCOLS), "eval/online-random/round_return/20",
    ):  # fmt: skip
        assert key in tags, key
    assert [step for step, _ in tags["losses/critic_loss"]] == [20, 30, 40]  # RL from step 16 on
    logged = {"generative_loss": [10], "infonce_loss": [10, 20], "vae_reward_loss": [10, 20], "vae_kl_loss": [10, 20]}
    for name in PRETRAINING_LOSSES[script]:  # CVAE steps 1-5, InfoNCE 6-15; VAE 1-15; flushed every 10 steps
        assert [step for step, _ in tags[f"losses/{name}"]] == logged[name], name
    assert_headline_printed(MODULES[script], HEADLINES[script], final, stdout)


@pytest.mark.parametrize("script", SCRIPTS)
def test_reevaluating_a_checkpoint_reproduces_the_logged_numbers(script, tiny_runs, tmp_path):
    assert_reevaluation_reproduces(f"baselines/{script}.py", tiny_runs[script][0], tmp_path, ())


@pytest.mark.parametrize("script", SCRIPTS)
def test_resume_in_pretraining_continues_exactly(script, tiny_data, tiny_runs, tmp_path):
    """Stopped in pre-training at step 10 and resumed to 40: the same losses, evaluations and networks as the run that
    went straight through (so the same seed also gives the same numbers in a fresh process). A run stopped at the end
    of pre-training (step 15): its pre-trained networks are those of the finished run (frozen in the RL phase), and
    its checkpoint cannot be evaluated."""
    proc = script_run(script, tiny_data, tmp_path, "r", *BRAC_ON, steps="10")
    assert "go on with --resume" in proc.stdout and not (tmp_path / "r" / "final_eval.json").exists()
    run_script(f"baselines/{script}.py", "--data-dir", tiny_data, "--runs-dir", tmp_path, "--run-name", "r",
               "--resume", "--num-train-steps", "40")  # fmt: skip
    straight = tiny_runs[script][0]
    final = json.loads((straight / "final_eval.json").read_text())
    assert json.loads((tmp_path / "r" / "final_eval.json").read_text())["protocols"] == final["protocols"]
    a, b = (torch.load(d / "checkpoint.pt", map_location="cpu", weights_only=False) for d in (straight, tmp_path / "r"))
    for name, state in a["networks"].items():
        assert all(torch.equal(state[k], b["networks"][name][k]) for k in state), name
    assert torch.equal(a["brac_alpha"], b["brac_alpha"])
    first, resumed = scalars(straight), scalars(tmp_path / "r")
    for key in first:
        if key.startswith(("losses/", "eval/")):
            assert first[key] == resumed[key], key

    script_run(script, tiny_data, tmp_path, "p", *BRAC_ON, steps=str(PRETRAINING))
    pretrained = torch.load(tmp_path / "p" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert pretrained["step"] == PRETRAINING and pretrained["phase"] == (2 if script == "corro" else "vae")
    for name in PRETRAINING_NETWORKS[script]:  # frozen in the RL phase
        state = pretrained["networks"][name]
        assert all(torch.equal(state[k], a["networks"][name][k]) for k in state), name
    if script == "corro":  # the aggregator E2 learns with the critic in the RL phase
        weights = pretrained["networks"]["aggregator"]["score.weight"], a["networks"]["aggregator"]["score.weight"]
        assert not torch.equal(*weights)
    refused = run_script(f"baselines/{script}.py", "--eval-checkpoint", tmp_path / "p" / "checkpoint.pt", check=False)
    assert_one_line_error(refused, "no policy to evaluate yet")


@pytest.mark.parametrize("script", SCRIPTS)
def test_plain_sac_by_default_and_the_other_options(script, tiny_data, tmp_path):
    """Point-Robot's default (CSRO's config): no BRAC; CORRO with reward-noise negatives (no CVAE phase: RL from step
    11), BOReL with KL to N(0, I), every ELBO time and the transition decoder."""
    extra = {
        "corro": ["--negatives", "reward-noise"],
        "borel": ["--kl-to", "prior", "--elbo-terms", "0", "--decode-state", "--state-loss-weight", "0.5"],
    }
    script_run(script, tiny_data, tmp_path, "plain", "--seed", "2", "--policy-delay", "2", *extra[script])
    plain = scalars(tmp_path / "plain")
    assert "losses/dual_critic_loss" not in plain
    assert {value for _, value in plain["charts/brac_alpha"] + plain["charts/divergence"]} == {0.0}
    checkpoint = torch.load(tmp_path / "plain" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert not checkpoint["optimizers"]["dual_critic"]["state"]  # never stepped
    if script == "corro":
        assert checkpoint["args"]["generative_steps"] == 0 and "losses/generative_loss" not in plain
        assert [step for step, _ in plain["losses/critic_loss"]] == [20, 30, 40]
        assert [step for step, _ in plain["losses/infonce_loss"]] == [10]
        assert not checkpoint["optimizers"]["generative_model"]["state"]
    else:
        assert "losses/vae_state_loss" in plain and "state_decoder" in checkpoint["networks"]
    assert_tiny_evaluation_record(tmp_path / "plain", MODULES[script].PROTOCOLS)


@pytest.mark.parametrize("env_id", [e for e in omrl_envs.ENV_IDS if e not in ("point-robot", "hopper-rand-params")])
def test_tiny_runs_on_every_other_family(env_id, tmp_path):
    """Both scripts on each family (its state, action and context sizes, CSRO's per-env rows), random data."""
    write_random_dataset(tmp_path / "data", env_id)
    for script in SCRIPTS:
        script_run(script, tmp_path / "data", tmp_path, script, "--env-id", env_id, "--protocols", "offline",
                   steps="20", timeout=600)  # fmt: skip
        final = json.loads((tmp_path / script / "final_eval.json").read_text())
        assert final["step"] == 20 and final["args"]["env_id"] == env_id
        assert np.isfinite(final["protocols"]["offline"]["return"])


@pytest.mark.parametrize("script", SCRIPTS)
def test_tiny_run_on_hopper(script, hopper_data, tmp_path):
    """A MuJoCo family with early episode ends (Hopper, collect_sac.py's tiny data, s' in CSRO's context): the
    pre-training, the RL phase and two protocols run; exploration-free protocols keep the scored budget."""
    protocols = ("offline", "online-prior")
    proc = script_run(
        script, hopper_data, tmp_path, "hopper", "--env-id", "hopper-rand-params", "--protocols", *protocols,
        steps="20", timeout=600,
    )  # fmt: skip
    final = json.loads((tmp_path / "hopper" / "final_eval.json").read_text())
    assert final["step"] == 20 and set(final["protocols"]) == set(protocols)
    assert final["args"]["normalize_states"] is True and final["args"]["gamma"] == 0.99  # every method, MuJoCo
    for result in final["protocols"].values():
        assert np.isfinite(result["return"]) and np.isfinite(result["context_shift"])
        assert max(len(runs) for runs in result["per_run"]) > 3  # scored episodes end early: more than 600 / 200
    assert proc.stdout.splitlines()[0].startswith("hopper-rand-params, preset cpu")


def test_bench_times_each_phase_alone():
    """benchmarks/bench_select.py gives CORRO and BOReL a row per training phase (CORRO: CVAE, InfoNCE, RL; BOReL:
    VAE, RL), each timed by a run of that phase only; every row has a speed and a peak memory."""
    bench = load_script("benchmarks/bench_select.py", "bench_select")
    cfg = {"script": "baselines/corro.py", "env_id": "point-robot", "preset": "cpu", "data_dir": "d", "runs_dir": "r"}
    flags = {phase: bench.script_args({**cfg, "phase": phase}, "x", 30, 3) for phase in bench.PHASES[cfg["script"]]}
    assert flags["cvae"][-4:] == ["--generative-steps", "30", "--encoder-steps", "0"]
    assert flags["infonce"][-4:] == ["--generative-steps", "0", "--encoder-steps", "30"]
    assert flags["rl"][-4:] == ["--generative-steps", "0", "--encoder-steps", "0"]
    assert bench.script_args({**cfg, "script": "select.py", "phase": None}, "x", 30, 3)[-1] == "1"  # no phase flags
    proc = run_script(
        "benchmarks/bench_select.py", "--scripts", "baselines/corro.py", "baselines/borel.py", "--presets", "cpu",
        "--threads", "1", "--steps", "20", timeout=600,
    )  # fmt: skip
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("  baselines/")]
    assert [row[:2] for row in rows] == [
        ["baselines/corro.py", "[cvae]"], ["baselines/corro.py", "[infonce]"], ["baselines/corro.py", "[rl]"],
        ["baselines/borel.py", "[vae]"], ["baselines/borel.py", "[rl]"],
    ]  # fmt: skip
    for row in rows:
        assert row[2] == "cpu" and float(row[3]) > 0 and row[4] == "steps/s,"
        assert float(row[row.index("RSS") + 1]) > 0.1  # GB
