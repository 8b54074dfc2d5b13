"""Device-to-host reads, counted. Each one (`float(x)`, `int(x)`, `bool(x)` and so `if x > 0:`, `operator.index`,
`minidt.to_numpy`) waits for a GPU to finish everything queued and copies back: one per training step is enough to
starve it. array_api_strict allows them all on its non-default device, so CI would never notice one: this counter is
the guard. It wraps the strict array type's conversions and `to_device` (what `minidt.to_numpy` calls) and records
every read of an array on device1.

Held at zero: a training step (`minidt.train.train_step`, host batch in, loss and gradient norm out on the device;
TD3+BC's `td3bc_step`, host transitions in, two losses out, and its trainer),
the trainer between logging steps, a forward and `get_action`; a rollout reads the actions once per environment
step. The strict backend's own kernels (erf) read its memory directly, as a CUDA kernel reads GPU memory: that is
not a transfer, and is not counted."""

from __future__ import annotations

import contextlib
import operator
import traceback

import array_api_strict
import numpy as np
import pytest

import minidt
from minidt import DecisionTransformerConfig, DecisionTransformerModel
from minidt.optim import AdamW, LinearWarmup, param_groups_no_decay
from minidt.train import train_step

ARRAY = type(array_api_strict.asarray(0.0))
HOST = array_api_strict.Device("CPU_DEVICE")
CONVERSIONS = ("__float__", "__int__", "__bool__", "__index__", "__complex__", "__array__", "__dlpack__")
CONFIG = dict(state_dim=3, act_dim=2, hidden_size=8, n_layer=2, n_head=2, max_ep_len=30, activation_function="gelu",
              resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, action_tanh=True)


@contextlib.contextmanager
def device_reads():
    """Yields a list that gets one entry per device-to-host read of a strict array: (conversion, where)."""
    reads: list[tuple[str, str]] = []

    def counted(name: str, original):
        def read(self, *args, **kwargs):
            if self.device != HOST and (name != "to_device" or args[0] == HOST):
                frame = next((f for f in reversed(traceback.extract_stack()[:-1]) if "/minidt/" in f.filename
                              and not f.filename.endswith("backend.py")), None)
                reads.append((name, f"{frame.filename}:{frame.lineno}" if frame else "the test"))
            return original(self, *args, **kwargs)
        return read

    with pytest.MonkeyPatch.context() as mp:
        for name in (*CONVERSIONS, "to_device"):
            mp.setattr(ARRAY, name, counted(name, getattr(ARRAY, name)))
        yield reads


def batch(B: int = 4, K: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """A training batch as the sampler makes it: host arrays, left-padded."""
    rng = np.random.default_rng(seed)
    mask = np.ones((B, K), np.float32)
    mask[0, :2] = 0.0
    return {"states": rng.normal(size=(B, K, 3)).astype(np.float32),
            "actions": rng.uniform(-1, 1, size=(B, K, 2)).astype(np.float32), "rewards": None,
            "returns_to_go": rng.normal(size=(B, K, 1)).astype(np.float32),
            "timesteps": rng.integers(0, 30, size=(B, K)), "attention_mask": mask}


def test_the_counter_sees_every_kind_of_read():
    """It can fail: each of these is one read."""
    strict = minidt.get_backend("strict")
    x = strict.asarray(np.array([1.5, -2.0]))
    with device_reads() as reads:
        float(x[0])
        int(x[1])
        if x[0] > 0:  # bool(): the hidden sync of a Python `if` on a device value
            pass
        operator.index(strict.asarray(np.array(1)))
        minidt.to_numpy(x)
        np.asarray(minidt.to_numpy(strict.xp.sum(x)))
    assert [r[0] for r in reads] == ["__float__", "__int__", "__bool__", "__index__", "to_device", "to_device"]
    with device_reads() as reads:
        minidt.to_numpy(array_api_strict.asarray(np.ones(2)))  # already on the host: no read
        y = strict.xp.exp(x) * 2  # device work
        minidt.backend.erf(y)  # a kernel on device memory
    assert reads == []


def test_a_training_step_reads_nothing_back():
    """Host batch in, (loss, grad_norm) out as 0-d device arrays: forward, loss, backward, clip, AdamW, warm-up."""
    model = DecisionTransformerModel(DecisionTransformerConfig(**CONFIG), backend="strict", seed=0)
    opt = AdamW(param_groups_no_decay(model.named_parameters(), 1e-4), lr=1e-3)
    sched = LinearWarmup(opt, 3)
    with device_reads() as reads:
        for step in range(3):  # the first step makes the optimizer's moments and flat buffers
            loss, grad_norm = train_step(model, opt, sched, batch(seed=step), 0.25)
    assert reads == [], reads
    assert np.isfinite(float(minidt.to_numpy(loss))) and float(minidt.to_numpy(grad_norm)) > 0


def discrete_batch(B: int = 4, K: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """batch() with one-hot actions of 3 discrete actions (padding: all-zero rows), as the sampler makes them."""
    x = batch(B, K, seed)
    ids = np.random.default_rng(seed).integers(0, 3, size=(B, K))
    x["actions"] = np.eye(3, dtype=np.float32)[ids] * x["attention_mask"][..., None]
    return x


def test_a_discrete_training_step_reads_nothing_back():
    """Cross-entropy on the logits, one-hot actions in: the same step, nothing read back either."""
    config = DecisionTransformerConfig(**{**CONFIG, "act_dim": 3, "action_tanh": False, "discrete_actions": True})
    model = DecisionTransformerModel(config, backend="strict", seed=0)
    opt = AdamW(param_groups_no_decay(model.named_parameters(), 1e-4), lr=1e-3)
    sched = LinearWarmup(opt, 3)
    with device_reads() as reads:
        for step in range(3):
            loss, grad_norm = train_step(model, opt, sched, discrete_batch(seed=step), 0.25)
        model.eval()
        model.get_action(**discrete_batch())
        x = {k: None if v is None else model.backend.asarray(v) for k, v in discrete_batch().items()}
        model.get_action(**x)
    assert reads == [], reads
    assert 0 < float(minidt.to_numpy(loss)) < 2 * np.log(3)


def test_a_td3bc_step_reads_nothing_back():
    """TD3+BC: host transitions in; the smoothing noise drawn on the host and moved with them; target, critic,
    the delayed actor (through the critic's backward), Polyak; two losses out on the device."""
    from minidt.td3bc import TD3BC, TD3BCConfig, td3bc_step

    agent = TD3BC(3, 2, [-1.0, -2.0], [2.0, 2.0], TD3BCConfig(hidden=8), backend="strict", seed=0)
    rng = np.random.default_rng(0)
    losses = []
    with device_reads() as reads:
        for _ in range(4):  # two with an actor update, two without
            batch = {"states": rng.normal(size=(4, 3)), "actions": rng.uniform(-1, 1, size=(4, 2)),
                     "rewards": rng.normal(size=(4, 1)), "next_states": rng.normal(size=(4, 3)),
                     "not_done": np.ones((4, 1))}
            losses.append(td3bc_step(agent, batch))
    assert reads == [], reads
    assert losses[0][1] is None and np.isfinite(float(minidt.to_numpy(losses[1][1])))


def test_forward_and_get_action_read_nothing_back():
    """Host inputs are checked on the host before they are moved; device inputs are not read at all."""
    model = DecisionTransformerModel(DecisionTransformerConfig(**CONFIG), backend="strict", seed=0)
    strict = model.backend
    x = batch()
    on_device = {k: None if v is None else strict.asarray(v) for k, v in x.items()}
    with device_reads() as reads:
        model(**x)
        model(**on_device)
        model.eval()
        with minidt.no_grad():
            model(**on_device)
        model.get_action(**x)
        model.get_action(**on_device)
    assert reads == [], reads


@pytest.mark.parametrize("discrete", [False, True])
def test_the_trainer_reads_only_when_it_logs_or_saves(cache, tmp_path, monkeypatch, discrete):
    """Between two training steps the loop reads nothing, except after a step that logs (the window's mean loss
    and gradient norm: one read), or checkpoints (the weights and moments, to write them). Discrete actions and
    behaviour cloning (CartPole, BC) too."""
    import minidt.train as t
    from tiny_runs import cartpole_hdf5

    data = dict(env="CartPole-v1", dataset=str(cartpole_hdf5(tmp_path / "cartpole.hdf5")), algo="bc") if discrete \
        else dict(env="Pendulum-v1", dataset="medium-replay")
    s = t.TrainSettings(**data, steps=12, K=5, batch_size=4, hidden_size=8, n_layer=1, n_head=2, warmup_steps=3,
                        log_every=4, checkpoint_every=12, final_eval_episodes=0, seed=0, backend="strict")
    real_step, after = t.train_step, []
    with device_reads() as reads:
        def step(*args, **kwargs):
            after.append(len(reads))  # the reads before this step: everything the loop did since the last one
            out = real_step(*args, **kwargs)
            after.append(len(reads))
            return out

        monkeypatch.setattr(t, "train_step", step)
        t.train(s, tmp_path / "run", progress=False)
    during = [b - a for a, b in zip(after[0::2], after[1::2])]
    between = [b - a for a, b in zip(after[1::2], after[2::2])]  # after step i (1-based), before step i + 1
    assert during == [0] * 12
    logged = {1, 4, 8}  # step 12 logs and checkpoints after the last call
    assert [i + 1 for i, n in enumerate(between) if n] == sorted(logged)
    assert all(between[i - 1] == 1 for i in logged)  # one read: the window's (loss, grad_norm) pair


def test_the_td3bc_trainer_reads_only_when_it_logs_or_saves(cache, tmp_path, monkeypatch):
    """TD3+BC's loop as the DT trainer's: nothing between steps but a logging window's one read (the critic's and
    the actor's summed losses) and a checkpoint's."""
    import minidt.td3bc.train as t

    s = t.TrainSettings(env="Pendulum-v1", dataset="medium-replay", algo="td3bc", steps=12, batch_size=4,
                        hidden_size=8, log_every=4, checkpoint_every=12, final_eval_episodes=0, seed=0,
                        backend="strict")
    real_step, after = t.td3bc_step, []
    with device_reads() as reads:
        def step(*args, **kwargs):
            after.append(len(reads))
            out = real_step(*args, **kwargs)
            after.append(len(reads))
            return out

        monkeypatch.setattr(t, "td3bc_step", step)
        t.train_td3bc(s, tmp_path / "run", progress=False)
    during = [b - a for a, b in zip(after[0::2], after[1::2])]
    between = [b - a for a, b in zip(after[1::2], after[2::2])]
    assert during == [0] * 12
    assert [i + 1 for i, n in enumerate(between) if n] == [1, 4, 8]  # step 12 logs and saves after the last call
    assert all(between[i - 1] == 1 for i in (1, 4, 8))


def test_a_rollout_reads_once_per_environment_step():
    """gymnasium needs the actions on the host: one read per step, for every episode of the vector env at once."""
    from minidt.evaluate import Preprocess, rollout

    model = DecisionTransformerModel(state_dim=3, act_dim=1, hidden_size=8, n_layer=1, n_head=2, max_ep_len=200,
                                     action_tanh=True, backend="strict", seed=0)
    pre = Preprocess(np.zeros(3), np.ones(3), 100.0, np.array([-2.0]), np.array([2.0]))
    with device_reads() as reads:
        rollout(model, "Pendulum-v1", [-300.0], 4, pre, K=3, seed=1, max_steps=10)
    assert len(reads) == 10, reads


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_discrete_rollout_reads_the_logits_once_per_step(temperature):
    """Argmax or sampling happens on the host, on the one read of the logits each step."""
    from minidt.evaluate import Preprocess, rollout

    model = DecisionTransformerModel(state_dim=4, act_dim=2, hidden_size=8, n_layer=1, n_head=2, max_ep_len=500,
                                     discrete_actions=True, backend="strict", seed=0)
    pre = Preprocess(np.zeros(4), np.ones(4), 100.0, np.zeros(0), np.zeros(0))
    with device_reads() as reads:
        out = rollout(model, "CartPole-v1", [100.0], 3, pre, K=3, seed=1, max_steps=6, temperature=temperature)
    assert len(reads) == 6 and out[0]["length_mean"] == 6, reads
