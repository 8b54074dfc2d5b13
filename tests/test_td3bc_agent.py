"""td3bc/agent.py: whole update steps (target with smoothing noise, critic, delayed actor, Polyak) against the
paper's TD3_BC.train in torch on identical weights, batches and noise; the delayed updates; seeds; backends;
the checkpointed state; the settings' checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import rel_error
from layer_helpers import assert_close, seeds
from minidt import to_numpy
from minidt.backend import Generator, dtype_name
from minidt.td3bc import TD3BC, TD3BCConfig, polyak_update, td3bc_step
from td3bc_reference import TorchTD3BC

LOW, HIGH = [-1.0, -2.0], [2.0, 2.0]  # an asymmetric box: the noise and clip scale per dimension


def batches(n: int, B: int = 6, S: int = 3, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"states": rng.normal(size=(B, S)), "actions": rng.uniform(LOW, HIGH, size=(B, 2)),
             "rewards": rng.normal(size=(B, 1)), "next_states": rng.normal(size=(B, S)),
             "not_done": (rng.random((B, 1)) > 0.2).astype(np.float64)} for _ in range(n)]


def make(seed: int = 0, backend="numpy", dtype="float64", **config) -> TD3BC:
    return TD3BC(3, 2, LOW, HIGH, TD3BCConfig(**{"hidden": 8, **config}), seed=seed, backend=backend, dtype=dtype)


def weights(agent: TD3BC) -> dict[str, np.ndarray]:
    return agent.state_dict()


@pytest.mark.parametrize("config", [{}, {"policy_freq": 3, "tau": 0.3, "alpha": 0.4, "discount": 0.9}])
def test_update_steps_match_the_papers_code_in_torch(torch, config):
    """Six steps: every weight of the four networks and both losses agree to float64 round-off with TD3_BC.train
    (torch.optim.Adam; our AdamW with weight decay 0) fed the same batches and the same noise draws. The large tau
    makes the Polyak update visible in the targets within six steps."""
    agent = make(seed=3, **config)
    ref = TorchTD3BC(torch, agent)
    z = Generator([3, 1])  # the agent's noise stream, replayed
    for i, batch in enumerate(batches(6)):
        loss_q, loss_pi = td3bc_step(agent, batch)
        want_q, want_pi = ref.step(batch, z.normal((6, 2), 1.0, "float64"))
        assert rel_error(to_numpy(loss_q), want_q) <= 1e-12, i
        assert (loss_pi is None) == (want_pi is None), i
        if want_pi is not None:
            assert rel_error(to_numpy(loss_pi), want_pi) <= 1e-12, i
    theirs = {f"{net}.{n}": p.detach().numpy() for net in agent.networks()
              for n, p in getattr(ref, net).named_parameters()}
    errors = assert_close(weights(agent), theirs, 1e-12)
    print(f"largest relative error: {max(errors.values()):.2e}")
    start = make(seed=3, **config).state_dict()
    assert all(not np.array_equal(w, start[n]) for n, w in weights(agent).items()), "some network did not move"


@given(st.integers(1, 4), st.integers(**seeds))
def test_actor_and_targets_move_only_every_policy_freq_steps(policy_freq, seed):
    """The critic moves every step; the actor and both targets only on steps policy_freq, 2 policy_freq, ..."""
    agent = make(seed=seed, policy_freq=policy_freq)
    for step, batch in enumerate(batches(2 * policy_freq + 1, seed=seed), start=1):
        before = weights(agent)
        _, loss_pi = td3bc_step(agent, batch)
        after = weights(agent)
        moved = {net for net in agent.networks()
                 if any(not np.array_equal(after[n], before[n]) for n in after if n.startswith(net + "."))}
        delayed = step % policy_freq == 0
        assert moved == ({"critic", "actor", "critic_target", "actor_target"} if delayed else {"critic"}), step
        assert (loss_pi is not None) == delayed
        assert all(p.grad is None for p in agent.critic.parameters()) or not delayed  # the actor's pass left none


@given(st.floats(0.0, 1.0), st.integers(**seeds))
def test_polyak_update_is_the_convex_combination(tau, seed):
    a, b = make(seed=seed), make(seed=seed + 1)
    want = {n: tau * p.data + (1 - tau) * q.data
            for (n, p), (_, q) in zip(a.actor.named_parameters(), b.actor.named_parameters())}
    polyak_update(a.actor, b.actor, tau)
    for n, q in b.actor.named_parameters():
        np.testing.assert_array_equal(q.data, want[n])
    if tau == 1.0:
        assert all(np.array_equal(p.data, q.data) for p, q in zip(a.actor.parameters(), b.actor.parameters()))


def test_targets_start_as_copies_and_own_their_memory():
    agent = make()
    for net in ("actor", "critic"):
        for p, q in zip(getattr(agent, net).parameters(), getattr(agent, f"{net}_target").parameters()):
            np.testing.assert_array_equal(p.data, q.data)
            assert not np.shares_memory(p.data, q.data)


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    def run(seed):
        agent = make(seed=seed)
        for batch in batches(4):
            td3bc_step(agent, batch)
        return weights(agent)

    a, b, c = run(0), run(0), run(1)
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert all(not np.array_equal(a[n], c[n]) for n in a if n.endswith("weight"))


def test_the_noise_matters():
    """The smoothing noise reaches the target: with noise 0 the critic's first step differs."""
    agent, quiet = make(), make(policy_noise=0.0)
    batch = batches(1)[0]
    assert to_numpy(td3bc_step(agent, batch)[0]) != to_numpy(td3bc_step(quiet, batch)[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backend_equals_numpy(dtype, device_backend):
    """Four steps on a device backend, from host batches, against NumPy's: same weights, same noise."""
    b = device_backend
    agent, other = make(dtype=dtype), make(backend=b, dtype=dtype)
    for batch in batches(4):
        losses = td3bc_step(agent, batch), td3bc_step(other, batch)
    for x in losses[1]:
        assert type(x).__module__.startswith("array_api_strict") or b.name == "cupy"
        assert dtype_name(x.dtype) == dtype
    tol = 1e-12 if dtype == "float64" else (1e-4 if b.name == "cupy" else 1e-5)  # 4 Adam steps amplify round-off
    assert_close(weights(other), weights(agent), tol)
    assert rel_error(to_numpy(losses[1][0]), to_numpy(losses[0][0])) <= tol


def test_state_dict_round_trip_continues_bit_for_bit():
    """Weights, both optimizers' moments, the noise stream and total_it: a restored agent continues as the original."""
    agent = make(seed=2)
    for batch in batches(3):
        td3bc_step(agent, batch)
    copy = make(seed=9)
    copy.load_state_dict(agent.state_dict())
    copy.actor_opt.load_state_dict(agent.actor_opt.state_dict())
    copy.critic_opt.load_state_dict(agent.critic_opt.state_dict())
    copy.noise.set_state(agent.noise.get_state())
    copy.total_it = agent.total_it
    for batch in batches(3, seed=1):
        td3bc_step(agent, batch)
        td3bc_step(copy, batch)
    a, b = weights(agent), weights(copy)
    assert all(np.array_equal(a[n], b[n]) for n in a)


def test_load_state_dict_names_what_is_wrong():
    agent = make()
    state = agent.state_dict()
    with pytest.raises(ValueError, match=r"missing \['actor.net.l1.bias'\], unexpected \[\]"):
        agent.load_state_dict({k: v for k, v in state.items() if k != "actor.net.l1.bias"})
    with pytest.raises(ValueError, match=r"actor.net.l1.weight: expected shape \(8, 3\), got \(3, 8\)"):
        agent.load_state_dict({**state, "actor.net.l1.weight": state["actor.net.l1.weight"].T})


@pytest.mark.parametrize("field, value, match", [
    ("hidden", 0, r"hidden: expected an integer >= 1, got 0"),
    ("policy_freq", 1.5, r"policy_freq: expected an integer >= 1, got 1.5"),
    ("discount", 1.5, r"discount: expected a finite number in \[0, 1\], got 1.5"),
    ("alpha", float("nan"), r"alpha: expected a finite number in \[0, inf\], got nan"),
    ("lr", 0.0, r"lr and tau: expected > 0, got 0.0 and 0.005"),
])
def test_bad_settings_name_the_field_expected_and_received(field, value, match):
    with pytest.raises(ValueError, match=match):
        TD3BCConfig(**{field: value})
