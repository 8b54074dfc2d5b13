"""td3bc/losses.py: the critic loss and the actor loss, differentiated end to end through the networks: against
central differences in float64 (every critic weight for L_Q; every actor weight for L_pi, through the critic),
against torch's autograd on the same weights and batch (the paper's expressions), and by properties that would
catch a wrong lambda, a missing or doubled term, or a gradient that leaks between the networks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from conftest import rel_error
from layer_helpers import TORCH_TOL, assert_close, fd_errors, param_grads, seeds
from minidt import to_numpy
from minidt.backend import backend_of, dtype_name
from minidt.td3bc import TD3BC, TD3BCConfig, actor_loss, critic_loss, td_target
from td3bc_reference import torch_modules


@st.composite
def cases(draw):
    return dict(B=draw(st.integers(1, 5)), S=draw(st.integers(1, 3)), A=draw(st.integers(1, 2)),
                H=draw(st.integers(1, 5)), alpha=draw(st.sampled_from([0.0, 0.7, 2.5])),
                seed=draw(st.integers(**seeds)))


def agent_and_batch(c: dict, backend="numpy") -> tuple[TD3BC, dict]:
    """A float64 agent (box [-1, 2] x [-2, 2], asymmetric) and a batch; its target y is a constant."""
    low, high = [-1.0, -2.0][: c["A"]], [2.0, 2.0][: c["A"]]
    agent = TD3BC(c["S"], c["A"], low, high, TD3BCConfig(hidden=c["H"], alpha=c.get("alpha", 2.5)),
                  seed=c["seed"], backend=backend, dtype="float64")
    rng = np.random.default_rng(c["seed"] + 1)
    B, S, A = c["B"], c["S"], c["A"]
    batch = {"states": rng.normal(size=(B, S)), "actions": rng.uniform(low, high, size=(B, A)),
             "y": rng.normal(size=(B, 1))}
    return agent, batch


def actor_pass(agent: TD3BC, s, a) -> tuple[float, float]:
    """Forward and backward of the actor's loss, as td3bc_step does it -> (loss, lambda); the grads land in
    agent.actor's parameters."""
    pi = agent.actor(s)
    q = agent.critic.q1(s, pi)
    loss, (dq, dpi_bc), lmbda = actor_loss(q, pi, a, agent.config.alpha)
    _, dpi_q = agent.critic.q1.backward(dq)
    agent.actor.zero_grad()
    agent.actor.backward(dpi_q + dpi_bc)
    return loss, lmbda


def actor_loss_at_fixed_lambda(agent: TD3BC, s, a, lmbda: float) -> float:
    """The paper's L_pi with lambda held at its value (detached): -lambda mean Q_1(s, pi(s)) + mean (pi - a)^2."""
    pi = agent.actor(s)
    return float(-lmbda * np.mean(agent.critic.q1(s, pi)) + np.mean((pi - a) ** 2))


@given(cases())
def test_critic_loss_matches_finite_differences_for_every_critic_weight(c):
    agent, x = agent_and_batch(c)
    s, a, y = x["states"], x["actions"], x["y"]

    def f():
        return float(critic_loss(*agent.critic(s, a), y)[0])

    loss, (dq1, dq2) = critic_loss(*agent.critic(s, a), y)
    agent.critic.backward(dq1, dq2)
    pairs = {n: (p.grad, p.data) for n, p in agent.critic.named_parameters()}
    assert len(pairs) == 12
    fd_errors(f, pairs, float(loss))


@given(cases())
def test_actor_loss_matches_finite_differences_for_every_actor_weight_through_the_critic(c):
    """lambda is a constant of the gradient (the paper detaches it): the central differences hold it fixed."""
    agent, x = agent_and_batch(c)
    s, a = x["states"], x["actions"]
    loss, lmbda = actor_pass(agent, s, a)
    lmbda = float(lmbda)
    assert rel_error(loss, actor_loss_at_fixed_lambda(agent, s, a, lmbda)) <= 1e-14
    pairs = {n: (p.grad, p.data) for n, p in agent.actor.named_parameters()}
    scale = abs(lmbda * np.mean(agent.critic.q1(s, agent.actor(s)))) + float(np.mean((agent.actor(s) - a) ** 2))
    fd_errors(lambda: actor_loss_at_fixed_lambda(agent, s, a, lmbda), pairs, scale)


@given(cases())
def test_losses_and_gradients_match_torch(torch, c):
    """The paper's expressions in torch, autograd through the same networks: F.mse_loss twice for the critic;
    -lambda Q.mean() + F.mse_loss(pi, a) with lambda = alpha / Q.abs().mean().detach() for the actor."""
    F = torch.nn.functional
    agent, x = agent_and_batch(c)
    s, a, y = x["states"], x["actions"], x["y"]
    ref = torch_modules(torch, agent)
    loss_q, (dq1, dq2) = critic_loss(*agent.critic(s, a), y)
    agent.critic.backward(dq1, dq2)
    ours = {"loss_q": loss_q, **{f"critic.{n}": g for n, g in param_grads(agent.critic).items()}}
    agent.critic.zero_grad()
    loss_pi, lmbda = actor_pass(agent, s, a)
    ours |= {"loss_pi": loss_pi, "lambda": lmbda, **{f"actor.{n}": g for n, g in param_grads(agent.actor).items()}}
    st_, at, yt = (torch.from_numpy(v) for v in (s, a, y))
    q1, q2 = ref["critic"](st_, at)
    loss_q_t = F.mse_loss(q1, yt) + F.mse_loss(q2, yt)
    loss_q_t.backward()
    theirs = {"loss_q": loss_q_t.item(),  # clones: the actor loss's backward below adds into them
              **{f"critic.{n}": p.grad.clone() for n, p in ref["critic"].named_parameters()}}
    pi = ref["actor"](st_)
    Q = ref["critic"].q1(st_, pi)
    lmbda_t = c["alpha"] / Q.abs().mean().detach()
    loss_pi_t = -lmbda_t * Q.mean() + F.mse_loss(pi, at)
    loss_pi_t.backward()
    theirs |= {"loss_pi": loss_pi_t.item(), "lambda": lmbda_t.item(),
               **{f"actor.{n}": p.grad for n, p in ref["actor"].named_parameters()}}
    assert_close(ours, theirs, TORCH_TOL)


@given(cases(), st.floats(1e-3, 1e3))
def test_the_q_term_is_invariant_to_the_scale_of_q(c, k):
    """lambda = alpha / mean|Q| makes the actor's gradient independent of Q's scale: a critic whose last layer is
    multiplied by k > 0 (Q -> k Q, what a reward scaled by k leads to) gives the same actor gradient. A lambda that
    were not normalized, or normalized by the wrong mean, would scale the Q term by k."""
    agent, x = agent_and_batch(c)
    s, a = x["states"], x["actions"]
    actor_pass(agent, s, a)
    before = {n: np.array(g) for n, g in param_grads(agent.actor).items()}
    for p in (agent.critic.q1.net.l3.weight, agent.critic.q1.net.l3.bias):
        p.data = p.data * k
    actor_pass(agent, s, a)
    for n, g in param_grads(agent.actor).items():
        assert rel_error(g, before[n]) <= 1e-9, n


@given(cases())
def test_alpha_zero_is_behaviour_cloning(c):
    """alpha = 0: lambda = 0, the critic drops out (its part of dL/dpi is exactly 0), and L_pi is the mean squared
    error to the dataset's actions: the actor's gradient is BC's, to the bit."""
    agent, x = agent_and_batch({**c, "alpha": 0.0})
    s, a = x["states"], x["actions"]
    loss, lmbda = actor_pass(agent, s, a)
    pi = agent.actor(s)
    assert float(lmbda) == 0.0 and rel_error(loss, np.mean((pi - a) ** 2)) <= 1e-15
    grads = {n: np.array(g) for n, g in param_grads(agent.actor).items()}
    agent.actor.zero_grad()
    agent.actor(s)
    agent.actor.backward((pi - a) * (2.0 / pi.size))  # the BC term's gradient, computed as actor_loss does
    for n, g in param_grads(agent.actor).items():
        np.testing.assert_array_equal(grads[n], g, err_msg=n)


@given(cases(), st.integers(0, 2**32 - 1))
def test_actor_gradient_ignores_what_the_critics_grads_held(c, garbage_seed):
    """Whatever the critic's .grad held before (None, the critic loss's gradient, garbage), the actor's gradient is
    the same to the bit: the actor learns through Q_1's backward to its action input, which reads weights, never
    grads."""
    agent, x = agent_and_batch(c)
    s, a = x["states"], x["actions"]
    actor_pass(agent, s, a)
    clean = {n: np.array(g) for n, g in param_grads(agent.actor).items()}
    rng = np.random.default_rng(garbage_seed)
    for p in agent.critic.parameters():
        p.grad = rng.normal(size=p.shape) * 1e3
    actor_pass(agent, s, a)
    for n, g in param_grads(agent.actor).items():
        np.testing.assert_array_equal(g, clean[n], err_msg=n)


@given(cases())
def test_critic_loss_gradient_vanishes_on_target_and_scales_with_error(c):
    """At q1 = q2 = y the loss and its gradient are 0; moving q1 by d changes only dq1, by 2 d / B."""
    _, x = agent_and_batch(c)
    y = x["y"]
    loss, (dq1, dq2) = critic_loss(y, y, y)
    assert loss == 0.0 and not dq1.any() and not dq2.any()
    q1 = y + np.random.default_rng(c["seed"]).normal(size=y.shape)
    d = q1 - y  # the TD error as floats hold it
    loss, (dq1, dq2) = critic_loss(q1, y, y)
    assert rel_error(dq1, 2 * d / len(y)) <= 1e-15 and not dq2.any()
    assert rel_error(loss, np.mean(d * d)) <= 1e-15


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=6), st.floats(0.1, 10.0))
def test_lambda_is_alpha_over_the_mean_absolute_q(qs, alpha):
    """Over |Q|, not |mean Q|: Q values of both signs must not cancel (a batch with Q = 1 and -3: lambda = alpha / 2,
    not alpha / 1)."""
    q = np.array(qs)[:, None]
    assume(np.mean(np.abs(q)) > 1e-3)
    pi, a = np.zeros((len(q), 1)), np.ones((len(q), 1))
    loss, (dq, dpi), lmbda = actor_loss(q, pi, a, alpha)
    assert rel_error(lmbda, alpha / np.mean(np.abs(q))) <= 1e-15
    assert rel_error(loss, -lmbda * np.mean(q) + 1.0) <= 1e-12
    np.testing.assert_array_equal(dq, np.full_like(q, -lmbda / len(q)))
    assert float(actor_loss(np.array([[1.0], [-3.0]]), pi[:1].repeat(2, 0), a[:1].repeat(2, 0), 2.0)[2]) == 1.0


def test_td_target_bootstraps_from_the_smaller_critic_only_when_not_done():
    r = np.array([[1.0], [2.0], [-3.0]])
    not_done = np.array([[1.0], [0.0], [1.0]])
    q1, q2 = np.array([[10.0], [10.0], [-5.0]]), np.array([[4.0], [-50.0], [7.0]])
    np.testing.assert_array_equal(td_target(r, not_done, q1, q2, 0.5), [[3.0], [2.0], [-5.5]])


def test_losses_stay_on_the_device(backend):
    """0-d losses and gradients on the inputs' backend, float32 in float32."""
    rng = np.random.default_rng(0)
    q, y, pi, a = (backend.asarray(rng.normal(size=shape), "float32") for shape in ((4, 1), (4, 1), (4, 2), (4, 2)))
    loss, grads = critic_loss(q, q * 2, y)
    loss_pi, (dq, dpi), lmbda = actor_loss(q, pi, a, 2.5)
    for x in (loss, *grads, loss_pi, dq, dpi, lmbda):
        assert backend_of(x) == backend and dtype_name(x.dtype) == "float32"
    assert loss.shape == loss_pi.shape == lmbda.shape == ()
    assert np.isfinite(float(to_numpy(loss_pi)))


@pytest.mark.parametrize("c", [dict(B=3, S=2, A=2, H=4, seed=5, alpha=2.5)])
def test_backend_equals_numpy(c, device_backend):
    """The actor pass on a device backend, float64, against NumPy's."""
    agent, x = agent_and_batch(c)
    agent_b, _ = agent_and_batch(c, device_backend)
    b = device_backend
    loss, lmbda = actor_pass(agent, x["states"], x["actions"])
    loss_b, lmbda_b = actor_pass(agent_b, b.asarray(x["states"]), b.asarray(x["actions"]))
    assert_close({"loss": loss_b, "lambda": lmbda_b, **param_grads(agent_b.actor)},
                 {"loss": loss, "lambda": lmbda, **param_grads(agent.actor)}, 1e-12)
