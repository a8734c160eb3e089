"""Tests of the baselines (baselines/csro.py, focal.py, offpearl.py): each script run as a user runs it (tiny sizes,
every protocol, save and reload), and the mathematics they add to select.py on hand-checked inputs."""

import dataclasses
import json
import math
import shutil

import pytest
import torch
from conftest import ROOT, load_script, run_script
from test_select import (
    TINY,
    assert_headline_printed,
    assert_one_line_error,
    assert_reevaluation_reproduces,
    assert_tiny_evaluation_record,
    random_batch,
    random_chunks,
    scalars,
    sel,
    whole_contexts,
    write_scripted_point_robot_dataset,
)

import omrl_envs

MODULES = {name: load_script(f"baselines/{name}.py", f"baseline_{name}") for name in ("csro", "focal", "offpearl")}
SCRIPTS = list(MODULES)
HEADLINES = {"csro": "online-random", "focal": "offline", "offpearl": "online-prior"}  # each paper's own protocol
BRAC_ON = ["--alpha", "50", "--alpha-max", "2000"]  # Point-Robot's default is plain offline SAC (CSRO's config)


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    write_scripted_point_robot_dataset(data_dir)
    return data_dir


def baseline_run(script, tiny_data, runs_dir, name, *extra, check=True):
    return run_script(
        f"baselines/{script}.py", "--data-dir", tiny_data, "--runs-dir", runs_dir, "--run-name", name, *TINY, *extra,
        check=check, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_runs(tiny_data, tmp_path_factory):
    """One tiny run of each script with BRAC on and every protocol: {script: (run directory, stdout)}."""
    runs_dir = tmp_path_factory.mktemp("runs")
    return {s: (runs_dir / s, baseline_run(s, tiny_data, runs_dir, s, *BRAC_ON).stdout) for s in SCRIPTS}


# ------------------------------------------------------------------------------------------------
# Mathematics, checked exactly
# ------------------------------------------------------------------------------------------------
def softplus(x):
    return math.log(1 + math.exp(x))


@pytest.mark.parametrize("script", ["select", *SCRIPTS])
def test_per_env_table_fills_every_table_option_for_every_family(script):
    """PRESETS (the sizes, one table per preset; a shared block, so the same in every script) and ENV_DEFAULTS (the
    algorithm's own rows): one row per option, one value per family in omrl_envs.ENV_IDS order, read by resolve_args
    for every preset and every family; a flag overrides one entry."""
    module = sel if script == "select" else MODULES[script]
    left_none = {f.name for f in dataclasses.fields(module.Args) if f.default is None}
    assert set(module.PRESETS) == {"cpu", "reference"} and module.Args().preset == "cpu"
    for preset, sizes in module.PRESETS.items():
        assert set(sizes) == set(module.PRESETS["cpu"]) and not set(sizes) & set(module.ENV_DEFAULTS)
        unset = {"run_name", "eval_checkpoint", "eval_output", "wandb_entity"}  # None means: not given
        assert left_none - set(sizes) - set(module.ENV_DEFAULTS) == unset
        for index, env_id in enumerate(omrl_envs.ENV_IDS):
            args = module.resolve_args(module.Args(env_id=env_id, preset=preset))
            for name, values in (sizes | module.ENV_DEFAULTS).items():
                assert len(values) == len(omrl_envs.ENV_IDS), name
                assert getattr(args, name) == values[index], (preset, env_id, name)
    assert sel.resolve_args(sel.Args(env_id="walker-rand-params")).latent_dim == 40  # a spot check of the layout
    args = module.resolve_args(module.Args(env_id="ant-goal", preset="reference", batch_size=32))
    assert (args.batch_size, args.context_size, args.num_train_steps) == (32, 512, 210_000)


@pytest.mark.parametrize("script", [*SCRIPTS, "corro", "borel"])
def test_one_state_normalisation_policy_for_every_method(script):
    """Every script normalises states on the MuJoCo families and not on Point-Robot, the same per-env
    default as select.py, so that a MuJoCo gap between methods is not an input-scaling gap."""
    module = MODULES.get(script) or load_script(f"baselines/{script}.py", f"baseline_{script}")
    for env_id in omrl_envs.ENV_IDS:
        resolved = module.resolve_args(module.Args(env_id=env_id)).normalize_states
        assert resolved is sel.resolve_args(sel.Args(env_id=env_id)).normalize_states is (env_id != "point-robot")


@pytest.mark.parametrize("script", ["select", *SCRIPTS])
def test_presets_keep_the_sizes_of_every_run_so_far(script):
    """cpu on Point-Robot is the preset of every Point-Robot run so far, reference on the MuJoCo families their
    earlier defaults (CSRO's sizes); reference on Point-Robot is CSRO's (context 1024, batch 256, 256x3, 65,000)."""
    module = sel if script == "select" else MODULES[script]
    sizes = ("context_size", "meta_batch_size", "batch_size", "rl_hidden", "num_train_steps", "eval_every")

    def resolved(env_id, preset):
        args = module.resolve_args(module.Args(env_id=env_id, preset=preset))
        return tuple(getattr(args, name) for name in sizes)

    assert resolved("point-robot", "cpu") == (128, 16, 64, (128,) * 3, 20_000, 2_000)
    assert resolved("point-robot", "reference") == (1024, 16, 256, (256,) * 3, 65_000, 5_000)
    assert resolved("cheetah-vel", "reference") == (100, 16, 256, (256,) * 3, 105_000, 5_000)
    assert resolved("ant-goal", "reference") == (512, 10, 256, (256,) * 3, 210_000, 5_000)
    for env_id in ("ant-dir", "humanoid-dir", "hopper-rand-params", "walker-rand-params"):
        assert resolved(env_id, "reference") == (256, 16, 256, (256,) * 3, 105_000, 5_000)
    assert resolved("ant-goal", "cpu") == (100, 10, 64, (128,) * 3, 20_000, 2_500)
    for env_id, steps in (("cheetah-vel", 7_000), ("ant-dir", 7_000), ("humanoid-dir", 4_000)):
        assert resolved(env_id, "cpu") == (100, 16, 64, (128,) * 3, steps, 1_000)
    for env_id in ("hopper-rand-params", "walker-rand-params"):
        assert resolved(env_id, "cpu") == (100, 16, 64, (128,) * 3, 7_000, 1_000)
    with pytest.raises(SystemExit, match="unknown --preset 'gpu': choose one of cpu, reference"):
        module.resolve_args(module.Args(preset="gpu"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_dual_kl_estimate_and_both_penalties_hand_computed(script):
    m = MODULES[script]
    c_data, c_policy = torch.tensor([0.0, 2.0]), torch.tensor([0.0, -1.0])
    expected = [-softplus(a) + math.log(softplus(b) + 1e-8) + 1 for a, b in ((0, 0), (2, -1))]
    torch.testing.assert_close(m.dual_kl_estimate(c_data, c_policy), torch.tensor(expected))

    obs, z = torch.zeros(2, 1), torch.zeros(2, 1)
    action, policy_action = torch.tensor([[0.5, -0.5], [0.0, 1.0]]), torch.tensor([[0.1, 0.2], [-0.3, 0.4]])

    def linear_critic(w, b):  # c(s, a, z) = w . a + b: ||dc/da|| = ||w|| wherever a is
        return lambda o, a, zz: (a @ torch.tensor(w) + b)[None]

    def loss(w, b, penalty):
        gen = torch.Generator().manual_seed(0)
        return m.dual_critic_loss_fn(linear_critic(w, b), obs, action, policy_action, z, 5.0, penalty, gen)

    def minus_mean_d(w, b):
        c = linear_critic(w, b)
        return -m.dual_kl_estimate(c(obs, action, z)[0], c(obs, policy_action, z)[0]).mean()

    # gradient: ||grad|| = 5 gives 5 * (5 - 1)^2 = 80 (up to the 1e-8 under the square root)
    torch.testing.assert_close(loss([3.0, 4.0], 0.0, "gradient"), minus_mean_d([3.0, 4.0], 0.0) + 80.0)
    # gradient: ||grad|| = 0.5 < 1: no penalty, however large c's value
    torch.testing.assert_close(loss([0.3, 0.4], 100.0, "gradient"), minus_mean_d([0.3, 0.4], 100.0))
    # value (the reference's): c(a_int) = 0.3 a1 + 0.4 a2 + 100 at a_int = pi + u (a - pi), u the generator's draws
    u = torch.rand(2, 1, generator=torch.Generator().manual_seed(0))
    a_int = policy_action + u * (action - policy_action)
    c_int = a_int @ torch.tensor([0.3, 0.4]) + 100.0
    expected_penalty = 5.0 * ((c_int.abs() - 1.0) ** 2).mean()
    torch.testing.assert_close(loss([0.3, 0.4], 100.0, "value"), minus_mean_d([0.3, 0.4], 100.0) + expected_penalty)
    # value: |c| <= 1 everywhere on the segment gives no penalty, however steep c is in a
    torch.testing.assert_close(loss([0.0, 0.0], 0.5, "value"), minus_mean_d([0.0, 0.0], 0.5))


@pytest.mark.parametrize("script", SCRIPTS)
def test_gradient_penalty_trains_the_dual_critic(script):
    """Against an independent computation on a real c, with the same interpolation draws; the penalty's gradient
    reaches c's weights (double backward)."""
    m = MODULES[script]
    torch.manual_seed(0)
    c = m.TwinCritic(2 + 2 + 3, (8, 8), num_members=1)
    obs, z = torch.randn(6, 2), torch.randn(6, 3)
    action, policy_action = torch.rand(6, 2) * 2 - 1, torch.rand(6, 2) * 2 - 1
    loss = m.dual_critic_loss_fn(c, obs, action, policy_action, z, 5.0, "gradient", torch.Generator().manual_seed(3))
    u = torch.rand(6, 1, generator=torch.Generator().manual_seed(3))
    a_interp = (policy_action + u * (action - policy_action)).requires_grad_(True)
    (grad,) = torch.autograd.grad(c(obs, a_interp, z).sum(), a_interp)
    penalty = ((grad.norm(dim=-1) - 1).clamp(min=0) ** 2).mean()
    divergence = m.dual_kl_estimate(c(obs, action, z)[0], c(obs, policy_action, z)[0])
    torch.testing.assert_close(loss, -divergence.mean() + 5 * penalty, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in c.parameters())


@pytest.mark.parametrize("script", SCRIPTS)
def test_brac_actor_loss_hand_computed(script):
    m = MODULES[script]
    obs, z, action = torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 2)
    policy_action = torch.tensor([[0.5, 0.1], [-0.2, 0.3]], requires_grad=True)
    log_pi, mean, log_std = torch.tensor([-1.0, 0.5]), torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.full((2, 2), -1.0)

    def critic(o, a, zz):  # Q1 = sum(a), Q2 = sum(a) + 1: min Q = sum(a) = 0.6, 0.1
        return torch.stack([a.sum(-1), a.sum(-1) + 1])

    def dual_critic(o, a, zz):  # c = 0 everywhere: D = -log 2 + log(log 2 + 1e-8) + 1 per state
        return torch.zeros(1, len(a))

    d = -math.log(2) + math.log(math.log(2) + 1e-8) + 1
    sample = (policy_action, log_pi, mean, log_std)
    reg = 1e-3 * ((1 + 4 + 0 + 1) / 4 + 1.0)  # mean(mu^2) + mean(log_std^2)
    loss, divergence = m.brac_actor_loss(critic, dual_critic, (obs, action), z, sample, torch.tensor(2.0), 1e-3)
    torch.testing.assert_close(loss, torch.tensor((-1 - 0.6 + 0.5 - 0.1) / 2 + 2 * d + reg))
    torch.testing.assert_close(divergence, torch.tensor(d))
    loss, divergence = m.brac_actor_loss(critic, None, (obs, action), z, sample, torch.tensor(2.0), 1e-3)  # no BRAC
    torch.testing.assert_close(loss, torch.tensor((-1 - 0.6 + 0.5 - 0.1) / 2 + reg))
    assert divergence == 0


def test_critic_and_value_targets():
    """Q onto reward_scale r + gamma (1 - d) Vbar(s', z); V onto min Q(s, a~, z) - log pi(a~)."""
    m = MODULES["csro"]
    torch.manual_seed(0)
    critic, value_net, value_target = m.TwinCritic(2 + 2 + 3, (8,)), m.ValueNet(2, 3, (8,)), m.ValueNet(2, 3, (8,))
    n = 5
    batch = random_batch(n, terminations=[0, 1, 0, 0, 1.0])
    z, a_sampled, log_pi = torch.randn(n, 3), torch.rand(n, 2) * 2 - 1, torch.randn(n)
    critic_loss, value_loss, q1 = m.critic_value_losses(
        critic, value_target, value_net, batch, z, (a_sampled, log_pi), 100.0, 0.9
    )
    with torch.no_grad():
        y = 100.0 * batch[2] + 0.9 * (1 - batch[4]) * value_target(batch[3], z)
        q = critic(batch[0], batch[1], z)
        v_target = critic(batch[0], a_sampled, z).min(0).values - log_pi
    torch.testing.assert_close(critic_loss, ((q[0] - y) ** 2).mean() + ((q[1] - y) ** 2).mean())
    torch.testing.assert_close(value_loss, ((value_net(batch[0], z) - v_target) ** 2).mean())
    torch.testing.assert_close(q1, q[0])


@pytest.mark.parametrize("script", SCRIPTS)
def test_tanh_gaussian_actor(script):
    m = MODULES[script]
    torch.manual_seed(0)
    actor = m.Actor(2, 3, (16,), 2)
    obs, z = torch.randn(7, 2), torch.randn(7, 3)
    with torch.no_grad():
        actor.net[-1].bias.copy_(torch.tensor([0.0, 0.0, 5.0, -30.0]))  # log-stds about 5 and -30
    assert actor.sample(obs, z, None)[3][:, 0].max() == 0 and actor.sample(obs, z, None)[3][:, 1].min() == -20
    with torch.no_grad():
        actor.net[-1].bias.copy_(torch.tensor([0.0, 0.0, 5.0, -1.0]))  # log-stds about 0 (clamped) and -1
    action, log_pi, mean, log_std = actor.sample(obs, z, torch.Generator().manual_seed(1))
    torch.testing.assert_close(actor(obs, z), torch.tanh(mean))
    eps = torch.randn(7, 2, generator=torch.Generator().manual_seed(1))
    pre_tanh = mean + log_std.exp() * eps
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(pre_tanh) - torch.log(1 - action**2 + 1e-6)
    torch.testing.assert_close(action, torch.tanh(pre_tanh))
    torch.testing.assert_close(log_pi, expected.sum(-1))


def test_pearl_product_of_gaussians_and_kl_hand_computed():
    m = MODULES["offpearl"]
    # factors N(1, 1) and N(3, 3), and a padded third row: precision 1 + 1/3, mean (1/1 + 3/3) / (4/3) = 1.5
    mean = torch.tensor([[[1.0], [3.0], [100.0]], [[7.0], [7.0], [7.0]]])
    var = torch.tensor([[[1.0], [3.0], [0.01]], [[2.0], [2.0], [2.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])[..., None]  # second context empty: the prior N(0, 1)
    post_mean, post_var = m.product_of_gaussians(mean, var, mask)
    torch.testing.assert_close(post_mean, torch.tensor([[1.5], [0.0]]))
    torch.testing.assert_close(post_var, torch.tensor([[0.75], [1.0]]))
    # KL(N(1.5, 0.75) || N(0, 1)) = (0.75 + 2.25 - 1 - log 0.75) / 2, summed with the prior's 0 and over dimensions
    kl = m.gaussian_kl_to_prior(post_mean, post_var)
    torch.testing.assert_close(kl, torch.tensor((0.75 + 2.25 - 1 - math.log(0.75)) / 2))
    two_dims = m.gaussian_kl_to_prior(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(two_dims, torch.tensor(0.5 + (2 - 1 - math.log(2)) / 2))
    # evaluation: z samples the posterior over the context's rows, the prior N(0, I) for an empty context
    torch.manual_seed(0)
    encoder = m.ContextEncoder(3, (8,), 4)
    rows = torch.randn(3, 6)
    z_inference = m.Summed(lambda r: m.posterior_statistics(encoder, r, 3),
                           lambda sums, counts: m.sample_posterior(sums, counts, torch.Generator().manual_seed(5)),
                           8, 6, "cpu")  # fmt: skip
    z = z_inference.z(z_inference.add(z_inference.prior(2), {0: rows}))
    eps = torch.randn(2, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        factor_mean, factor_var = encoder(rows[:, :3])
    precision = (1 / factor_var).sum(0)
    torch.testing.assert_close(z[0], (factor_mean / factor_var).sum(0) / precision + precision.rsqrt() * eps[0])
    torch.testing.assert_close(z[1], eps[1])


def test_pearl_running_posterior_equals_the_product_over_the_whole_context():
    """The meta-test's running sums of (mean_j / var_j, 1 / var_j) against product_of_gaussians over each whole
    context encoded at once (what every inference computed before the running form), on random contexts added in
    rounds, with the same posterior draws: equal to 1e-6."""
    m = MODULES["offpearl"]
    torch.manual_seed(0)
    encoder = m.ContextEncoder(5, (32, 32), 4)
    chunks = random_chunks(6, 7, rounds=12, seed=2)
    z_inference = m.Summed(lambda r: m.posterior_statistics(encoder, r, 5),
                           lambda sums, counts: m.sample_posterior(sums, counts, torch.Generator().manual_seed(3)),
                           8, 7, "cpu")  # fmt: skip
    state = z_inference.prior(6)
    for k in range(len(chunks)):
        state = z_inference.add(state, chunks[k])
        context, counts = whole_contexts(chunks[: k + 1], 6, 7)
        with torch.no_grad():
            mask = (torch.arange(context.shape[1]) < counts[:, None]).float()[..., None]
            mean, var = m.product_of_gaussians(*encoder(context[..., :5]), mask)
        whole = mean + var.sqrt() * torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(z_inference.z(state), whole, rtol=0, atol=1e-6)


def test_pearl_encoder_samples_the_posterior():
    m = MODULES["offpearl"]
    torch.manual_seed(0)
    encoder = m.ContextEncoder(3, (8,), 2)
    context = torch.randn(1, 4, 3).expand(4000, 4, 3)  # one context, many reparameterised draws
    with torch.no_grad():
        z, kl = m.encoder_losses(encoder, context, torch.Generator().manual_seed(0))
        post_mean, post_var = m.product_of_gaussians(*encoder(context[:1]), torch.ones(1, 4, 1))
    assert torch.allclose(z.mean(0), post_mean[0], atol=4 * float(post_var.max().sqrt()) / math.sqrt(4000))
    assert torch.allclose(z.var(0), post_var[0], rtol=0.1)
    torch.testing.assert_close(kl, 4000 * m.gaussian_kl_to_prior(post_mean, post_var))


def test_focal_loss_on_a_meta_batch_drawn_with_replacement():
    m = MODULES["focal"]
    train_tasks = torch.tensor(omrl_envs.TRAIN_TASKS)
    task_ids = m.sample_meta_batch(train_tasks, 16, torch.Generator().manual_seed(0))
    assert set(task_ids.tolist()) <= set(omrl_envs.TRAIN_TASKS)
    assert len(set(task_ids.tolist())) < 16  # 16 of 30 with replacement: repeats (same-task pairs) occur
    assert len(m.sample_meta_batch(train_tasks, 40, torch.Generator().manual_seed(0))) == 40  # more than 30 is fine
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 2.0], [0.0, 1.0]])
    # pairs: (0,1) D=1, (0,2) D=2, (0,3) D=0.5, (1,2) D=1, (1,3) D=0.5, (2,3) D=0.5; tasks 4, 4, 9, 4
    same = [1, 0.5, 0.5]  # (0,1), (0,3), (1,3) attract: sqrt(D + 1e-3)
    different = [2, 1, 0.5]  # (0,2), (1,2), (2,3) repel: 1 / (D + 0.1)
    expected = sum(math.sqrt(d + 1e-3) for d in same) / 3.001 + sum(1 / (d + 0.1) for d in different) / 3.001
    loss = m.focal_distance_metric_loss(z, torch.tensor([4, 4, 9, 4]))
    torch.testing.assert_close(loss, torch.tensor(expected))
    # every draw the same task: attraction alone
    attract = (2 * math.sqrt(1.001) + math.sqrt(2.001)) / 3.001
    torch.testing.assert_close(m.focal_distance_metric_loss(z[:3], torch.tensor([4, 4, 4])), torch.tensor(attract))


# ------------------------------------------------------------------------------------------------
# The scripts, run as a user runs them
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", SCRIPTS)
def test_run_record_and_every_protocol(script, tiny_runs):
    run_dir, stdout = tiny_runs[script]
    for name in ("args.json", "checkpoint.pt", "final_eval.json", "eval_history.jsonl"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert json.loads((run_dir / "args.json").read_text())["exp_name"] == script
    final = assert_tiny_evaluation_record(run_dir, MODULES[script].PROTOCOLS)
    checkpoint = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert checkpoint["step"] == 40 and checkpoint["args"]["alpha_max"] == 2000
    assert set(checkpoint["networks"]) >= {"context_encoder", "actor", "critic", "value_net", "value_target"}
    assert set(checkpoint["optimizers"]) >= {"context_encoder", "actor", "critic", "value_net", "dual_critic"}
    assert ("club_net" in checkpoint["networks"]) == (script == "csro")
    assert "obs_mean" in checkpoint and "obs_std" in checkpoint
    assert 0 < float(checkpoint["brac_alpha"]) != 50  # adapted
    tags = scalars(run_dir)
    encoder_keys = {"csro": ["focal_loss", "club_loss", "club_model_loss"], "focal": ["focal_loss"]}
    for key in (
        "losses/critic_loss", "losses/actor_loss", "losses/value_loss", "losses/dual_critic_loss",
        *(f"losses/{k}" for k in encoder_keys.get(script, ["kl_loss"])), "charts/divergence", "charts/brac_alpha",
        "charts/log_pi", "charts/SPS", *(f"eval/{p}/return" for p in MODULES[script].PROTOCOLS),
        "eval/online-random/round_return/20", "eval/context_shift",
    ):  # fmt: skip
        assert key in tags, key
    assert [step for step, _ in tags["losses/critic_loss"]] == [10, 20, 30, 40]
    assert_headline_printed(MODULES[script], HEADLINES[script], final, stdout)


@pytest.mark.parametrize("script", SCRIPTS)
def test_reevaluating_a_checkpoint_reproduces_the_logged_numbers(script, tiny_runs, tmp_path):
    assert_reevaluation_reproduces(f"baselines/{script}.py", tiny_runs[script][0], tmp_path, sel.PROTOCOLS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_same_seed_same_numbers_and_plain_sac_by_default(script, tiny_data, tiny_runs, tmp_path):
    baseline_run(script, tiny_data, tmp_path, "again", *BRAC_ON)
    first, again = scalars(tiny_runs[script][0]), scalars(tmp_path / "again")
    for key in first:
        if key.startswith(("losses/", "eval/")):
            assert first[key] == again[key], key
    final = json.loads((tiny_runs[script][0] / "final_eval.json").read_text())
    assert json.loads((tmp_path / "again" / "final_eval.json").read_text())["protocols"] == final["protocols"]
    # Point-Robot's default (CSRO's config): no BRAC, so no dual-critic update and no penalty; another seed, and the
    # actor and value target updated every other step
    baseline_run(script, tiny_data, tmp_path, "plain", "--seed", "2", "--policy-delay", "2")
    plain = scalars(tmp_path / "plain")
    assert [step for step, _ in plain["losses/actor_loss"]] == [10, 20, 30, 40]
    assert "losses/dual_critic_loss" not in plain
    assert {value for _, value in plain["charts/brac_alpha"] + plain["charts/divergence"]} == {0.0}
    assert plain["losses/critic_loss"] != first["losses/critic_loss"]
    checkpoint = torch.load(tmp_path / "plain" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert not checkpoint["optimizers"]["dual_critic"]["state"]  # never stepped


@pytest.mark.parametrize("script", SCRIPTS)
def test_resume_continues_exactly(script, tiny_data, tiny_runs, tmp_path):
    """Stopped at step 20 and resumed to 40 (BRAC on: the dual critic and BRAC's alpha resume too): the same
    evaluations and networks as the uninterrupted run."""
    first_half = [a if a != "40" else "20" for a in TINY]
    run_script(f"baselines/{script}.py", "--data-dir", tiny_data, "--runs-dir", tmp_path, "--run-name", "r",
               *first_half, *BRAC_ON)  # fmt: skip
    run_script(f"baselines/{script}.py", "--data-dir", tiny_data, "--runs-dir", tmp_path, "--run-name", "r",
               "--resume", "--num-train-steps", "40")  # fmt: skip
    straight = tiny_runs[script][0]
    final = json.loads((straight / "final_eval.json").read_text())
    assert json.loads((tmp_path / "r" / "final_eval.json").read_text())["protocols"] == final["protocols"]
    a, b = (torch.load(d / "checkpoint.pt", map_location="cpu", weights_only=False) for d in (straight, tmp_path / "r"))
    for name, state in a["networks"].items():
        assert all(torch.equal(state[k], b["networks"][name][k]) for k in state), name
    assert torch.equal(a["brac_alpha"], b["brac_alpha"])


@pytest.mark.parametrize("script, flags, trained", [
    ("csro", ["--focal-weight", "0", "--club-weight", "0"], False),  # RL losses see z.detach()
    ("focal", ["--focal-weight", "0"], False),
    ("offpearl", ["--kl-weight", "0"], True),  # PEARL: the critic loss trains the encoder
])  # fmt: skip
def test_which_losses_train_the_encoder(script, flags, trained, tiny_data, tmp_path):
    baseline_run(script, tiny_data, tmp_path, "enc", *BRAC_ON, *flags, "--protocols", "offline")
    checkpoint = torch.load(tmp_path / "enc" / "checkpoint.pt", map_location="cpu", weights_only=False)
    torch.manual_seed(1)  # the script's seeding; the context encoder is the first network it builds
    initial = MODULES[script].ContextEncoder(2 + 2 + 1, (16, 16), 4).state_dict()
    final = checkpoint["networks"]["context_encoder"]
    assert all(torch.equal(initial[k], final[k]) for k in initial) != trained


@pytest.mark.parametrize("script", SCRIPTS)
def test_nan_in_a_loss_stops_the_run(script, tiny_data, tmp_path):
    proc = baseline_run(
        script, tiny_data, tmp_path, "diverge", *BRAC_ON, "--learning-rate", "1e30", "--eval-every", "1",
        "--log-every", "1", "--protocols", "offline", check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "non-finite")


@pytest.mark.parametrize("script, flags, fragment", [
    *((s, ["--alpha-max", "-1"], "--alpha-max must be >= 0") for s in SCRIPTS),
    *((s, ["--dual-critic-steps", "0"], "--dual-critic-steps must be positive") for s in SCRIPTS),
    ("csro", ["--meta-batch-size", "31"], "--meta-batch-size must be at most 30"),
    ("csro", ["--club-weight", "-1"], "--club-weight must be >= 0"),
    ("focal", ["--focal-weight", "-1"], "--focal-weight must be >= 0"),
    ("offpearl", ["--kl-weight", "-0.1"], "--kl-weight must be >= 0"),
    ("offpearl", ["--protocols", "online-magic"], "unknown protocol 'online-magic'"),
])  # fmt: skip
def test_bad_flag_values(script, flags, fragment, tiny_data, tmp_path):
    proc = run_script(f"baselines/{script}.py", "--data-dir", tiny_data, "--runs-dir", tmp_path, *flags, check=False)
    assert_one_line_error(proc, fragment)
    assert not list(tmp_path.iterdir())  # nothing written


def test_focal_accepts_meta_batches_larger_than_the_train_set():
    args = MODULES["focal"].resolve_args(MODULES["focal"].Args(meta_batch_size=40))
    assert args.meta_batch_size == 40 and args.alpha_max == 0 and args.reward_scale == 100


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_documents_every_option(script):
    help_text = run_script(f"baselines/{script}.py", "--help").stdout
    for field in MODULES[script].Args.__dataclass_fields__:
        assert f"--{field.replace('_', '-')}" in help_text, field


def test_missing_point_robot_dataset_is_built_by_the_collector(tmp_path):
    """As select.py: a baseline runs collect_sac.py (here a fast stand-in) when the Point-Robot dataset is missing."""
    root = tmp_path / "clone"
    (root / "baselines").mkdir(parents=True)
    for name in ("select.py", "omrl_envs.py", "baselines/csro.py"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "select", root / "select")
    shutil.copytree(ROOT / "tests", root / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "collect_sac.py").write_text(
        "import sys\nfrom pathlib import Path\nsys.path.insert(1, str(Path(__file__).parent / 'tests'))\n"
        "from test_select import write_scripted_point_robot_dataset\n"
        "print('stand-in collector')\nwrite_scripted_point_robot_dataset(Path(sys.argv[4]), 2, 2)\n"
    )
    proc = run_script("baselines/csro.py", "--data-dir", "fresh", "--run-name", "auto", *TINY, cwd=root)
    assert "stand-in collector" in proc.stdout
    assert (root / "runs" / "auto" / "final_eval.json").is_file()
