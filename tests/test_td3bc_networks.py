"""td3bc/networks.py: the actor and the twin critics. Their backward passes against central differences (every
weight, and the critic's state and action inputs: the actor learns through the latter) and against torch on the same
weights; accumulation, grad modes, the action box, the init, bad input; every backend."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from layer_helpers import TORCH_TOL, assert_close, fd_errors, is_on, param_grads, seeds, twin, twin_tol
from minidt import no_grad, to_numpy
from minidt.backend import Generator, dtype_name
from minidt.td3bc import Actor, Critic, QNetwork
from td3bc_reference import torch_modules
from minidt.td3bc import TD3BC, TD3BCConfig


@st.composite
def cases(draw):
    return dict(B=draw(st.integers(1, 4)), S=draw(st.integers(1, 3)), A=draw(st.integers(1, 2)),
                H=draw(st.integers(1, 5)), seed=draw(st.integers(**seeds)))


def inputs(c: dict, dtype: str = "float64"):
    rng = np.random.default_rng(c["seed"] + 1)
    return (rng.normal(size=(c["B"], c["S"])).astype(dtype), rng.uniform(-2, 2, size=(c["B"], c["A"])).astype(dtype))


def bounds(c: dict) -> tuple[np.ndarray, np.ndarray]:
    low = -1.0 - np.arange(c["A"])  # an asymmetric box in the second dimension: mid != 0
    return low, np.full(c["A"], 2.0)


@given(cases())
def test_q_backward_matches_finite_differences_for_weights_state_and_action(c):
    """d Q / d action is what the actor is trained by: checked like every weight."""
    q = QNetwork(c["S"], c["A"], c["H"], gen=Generator(c["seed"]), dtype="float64")
    s, a = inputs(c)
    dq = np.random.default_rng(c["seed"] + 2).normal(size=(c["B"], 1))
    out = q(s, a)
    ds, da = q.backward(dq)
    pairs = {n: (p.grad, p.data) for n, p in q.named_parameters()} | {"state": (ds, s), "action": (da, a)}
    fd_errors(lambda: float(np.sum(q(s, a) * dq)), pairs, float(np.sum(np.abs(out * dq))))


@given(cases())
def test_critic_backward_matches_finite_differences(c):
    """Both critics' weights, and the inputs' gradients summed over the two."""
    critic = Critic(c["S"], c["A"], c["H"], gen=Generator(c["seed"]), dtype="float64")
    s, a = inputs(c)
    rng = np.random.default_rng(c["seed"] + 2)
    d1, d2 = rng.normal(size=(c["B"], 1)), rng.normal(size=(c["B"], 1))

    def f():
        q1, q2 = critic(s, a)
        return float(np.sum(q1 * d1) + np.sum(q2 * d2))

    q1, q2 = critic(s, a)
    ds, da = critic.backward(d1, d2)
    pairs = {n: (p.grad, p.data) for n, p in critic.named_parameters()} | {"state": (ds, s), "action": (da, a)}
    assert len(pairs) == 14
    fd_errors(f, pairs, float(np.sum(np.abs(q1 * d1)) + np.sum(np.abs(q2 * d2))))


@given(cases())
def test_actor_backward_matches_finite_differences(c):
    low, high = bounds(c)
    actor = Actor(c["S"], c["A"], low, high, c["H"], gen=Generator(c["seed"]), dtype="float64")
    s, _ = inputs(c)
    dout = np.random.default_rng(c["seed"] + 2).normal(size=(c["B"], c["A"]))
    out = actor(s)
    ds = actor.backward(dout)
    pairs = {n: (p.grad, p.data) for n, p in actor.named_parameters()} | {"state": (ds, s)}
    fd_errors(lambda: float(np.sum(actor(s) * dout)), pairs, float(np.sum(np.abs(out * dout))))


@given(cases())
def test_forward_and_backward_match_torch(torch, c):
    """Actor and critic against torch modules holding the same weights (the fake-loss trick)."""
    low, high = bounds(c)
    agent = TD3BC(c["S"], c["A"], low, high, TD3BCConfig(hidden=c["H"]), seed=c["seed"], dtype="float64")
    ref = torch_modules(torch, agent)
    s, a = inputs(c)
    rng = np.random.default_rng(c["seed"] + 2)
    dpi, d1, d2 = rng.normal(size=(c["B"], c["A"])), rng.normal(size=(c["B"], 1)), rng.normal(size=(c["B"], 1))
    pi, (q1, q2) = agent.actor(s), agent.critic(s, a)
    ds_pi = agent.actor.backward(dpi)
    ds_q, da_q = agent.critic.backward(d1, d2)
    st_, at = torch.tensor(s, requires_grad=True), torch.tensor(a, requires_grad=True)
    pi_t = ref["actor"](st_)
    (pi_t * torch.from_numpy(dpi)).sum().backward()
    actor_theirs = {"pi": pi_t.detach().numpy(), "state": st_.grad.numpy(),
                    **{n: p.grad.numpy() for n, p in ref["actor"].named_parameters()}}
    assert_close({"pi": pi, "state": ds_pi, **param_grads(agent.actor)}, actor_theirs, TORCH_TOL)
    st_.grad = None
    q1_t, q2_t = ref["critic"](st_, at)
    ((q1_t * torch.from_numpy(d1)).sum() + (q2_t * torch.from_numpy(d2)).sum()).backward()
    critic_theirs = {"q1": q1_t.detach().numpy(), "q2": q2_t.detach().numpy(), "state": st_.grad.numpy(),
                     "action": at.grad.numpy(), **{n: p.grad.numpy() for n, p in ref["critic"].named_parameters()}}
    assert_close({"q1": q1, "q2": q2, "state": ds_q, "action": da_q, **param_grads(agent.critic)}, critic_theirs,
                 TORCH_TOL)


@given(cases(), st.floats(-1e3, 1e3))
def test_actor_acts_inside_the_box(c, scale):
    """Any state, however far out: low <= pi(s) <= high in every dimension (tanh's range mapped onto the box)."""
    low, high = bounds(c)
    actor = Actor(c["S"], c["A"], low, high, c["H"], gen=Generator(c["seed"]), dtype="float64")
    s, _ = inputs(c)
    with no_grad():
        pi = actor(s * scale)
    assert np.all(pi >= low) and np.all(pi <= high)


def test_init_is_torchs_linear_default():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases (nn.Linear's reset_parameters): bounded by it, and
    spread over it (a normal init would cross the bound or crowd the middle)."""
    critic = Critic(3, 1, 256, gen=Generator(0))
    for name, p in critic.named_parameters():
        fan_in = {"l1": 4, "l2": 256, "l3": 256}[name.split(".")[2]]
        x = np.abs(p.data) * np.sqrt(fan_in)
        assert x.max() <= 1.0, name
        if p.data.size >= 256:
            assert x.max() > 0.95 and abs(x.mean() - 0.5) < 0.05, name  # |U(-1, 1)| has mean 1/2


def test_gradients_accumulate(backend):
    """Two forward/backward passes leave twice one pass's gradients (PyTorch's semantics), in both networks."""
    c = dict(B=3, S=3, A=2, H=5, seed=0)
    s, a = (backend.asarray(x) for x in inputs(c))
    actor = Actor(3, 2, *bounds(c), 5, gen=Generator(0, backend), backend=backend, dtype="float64")
    critic = Critic(3, 2, 5, gen=Generator(1, backend), backend=backend, dtype="float64")
    dpi, dq = backend.asarray(np.ones((3, 2))), backend.asarray(np.ones((3, 1)))

    def one_pass():
        actor(s)
        actor.backward(dpi)
        critic(s, a)
        critic.backward(dq, 2 * dq)

    one_pass()
    once = {n: np.array(to_numpy(g)) for m in (actor, critic) for n, g in param_grads(m).items()}
    one_pass()
    for m in (actor, critic):
        for n, g in param_grads(m).items():
            np.testing.assert_allclose(to_numpy(g), 2 * once[n], rtol=1e-15, err_msg=n)


def test_no_grad_keeps_nothing_and_backward_says_so(backend):
    critic = Critic(3, 2, 5, gen=Generator(0, backend), backend=backend)
    s, a = (backend.asarray(x) for x in inputs(dict(B=2, S=3, A=2, seed=0), "float32"))
    with no_grad():
        critic(s, a)
    assert all(getattr(m, "cache", None) is None for m in critic.modules())
    with pytest.raises(RuntimeError, match="Critic.backward: no forward pass to differentiate.*no_grad"):
        critic.backward(backend.asarray(np.ones((2, 1), np.float32)), backend.asarray(np.ones((2, 1), np.float32)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backend_equals_numpy(dtype, device_backend):
    b, c = device_backend, dict(B=4, S=3, A=2, H=6, seed=3)
    make = {"actor": lambda backend: Actor(3, 2, *bounds(c), 6, gen=Generator(0, backend), backend=backend,
                                           dtype=dtype),
            "critic": lambda backend: Critic(3, 2, 6, gen=Generator(1, backend), backend=backend, dtype=dtype)}
    actor, critic = make["actor"]("numpy"), make["critic"]("numpy")
    actor_b, critic_b = twin(actor, make["actor"], b), twin(critic, make["critic"], b)
    s, a = inputs(c, dtype)
    dq = np.ones((4, 1), dtype)
    ours = {"pi": actor_b(b.asarray(s)), "q": critic_b(b.asarray(s), b.asarray(a))[0]}
    ours["ds"], ours["da"] = critic_b.backward(b.asarray(dq), b.asarray(dq))
    ours["ds_pi"] = actor_b.backward(b.asarray(np.ones((4, 2), dtype)))
    ours |= {f"critic.{n}": g for n, g in param_grads(critic_b).items()}
    ref = {"pi": actor(s), "q": critic(s, a)[0]}
    ref["ds"], ref["da"] = critic.backward(dq, dq)
    ref["ds_pi"] = actor.backward(np.ones((4, 2), dtype))
    ref |= {f"critic.{n}": g for n, g in param_grads(critic).items()}
    assert all(is_on(x, b) and dtype_name(x.dtype) == dtype for x in ours.values())
    assert_close(ours, ref, twin_tol(b, dtype))


def test_actor_moves_to_a_device_with_its_box(device_backend):
    """Module.to moves parameters; the actor's box (mid, half) goes along."""
    c = dict(B=2, S=3, A=2, H=4, seed=0)
    actor = Actor(3, 2, *bounds(c), 4, gen=Generator(0, "numpy"), backend="numpy", dtype="float64")
    s, _ = inputs(c)
    want = actor(s)
    actor.to(device_backend)
    got = actor(device_backend.asarray(s))
    assert is_on(got, device_backend) and np.allclose(to_numpy(got), want, rtol=1e-12, atol=0)


def test_bad_input_names_argument_expected_and_received():
    with pytest.raises(ValueError, match=r"action_low, action_high: expected finite bounds with low < high in each "
                                         r"of the 2 dimensions, got \[1\.0, -1\.0\] and \[1\.0, 1\.0\]"):
        Actor(3, 2, [1.0, -1.0], [1.0, 1.0], gen=Generator(0))
    q = QNetwork(3, 2, 4, gen=Generator(0))
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 5\), got \(2, 6\)"):
        q(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
