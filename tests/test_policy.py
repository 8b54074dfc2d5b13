"""minidt.load_policy: a stateful policy that acts exactly as `minidt evaluate RUN --targets R --episodes 1 --seed S`
(the same actions, bit for bit, and the same return), from a run directory or one of its checkpoints/step-N; and the
book's gymnasium loop (docs/training.md) runs as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import minidt
from minidt.cli import main
from tiny_runs import pendulum_hdf5, tiny_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("policy")
    # a model that has moved from its initialization (lr 0.05): its actions depend on the state and the target
    return tiny_run(tmp / "run", pendulum_hdf5(tmp / "pendulum-random.hdf5"), steps=3, lr=0.05, hidden_size=16)


def evaluate_once(path: Path, target: float, seed: int, monkeypatch, capsys) -> tuple[np.ndarray, float]:
    """`minidt evaluate PATH --targets R --episodes 1 --seed S --json`: the actions it sent the environment and the
    return it reports."""
    sent = []
    step = gym.vector.SyncVectorEnv.step

    def spy(self, actions):
        sent.append(np.array(actions[0]))
        return step(self, actions)

    monkeypatch.setattr(gym.vector.SyncVectorEnv, "step", spy)
    argv = ["evaluate", str(path), "--targets", str(target), "--episodes", "1", "--seed", str(seed), "--json"]
    assert main(argv) == 0
    (e,) = json.loads(capsys.readouterr().out)["evaluations"]
    monkeypatch.undo()
    return np.stack(sent), e["return_mean"]


def play(policy: minidt.Policy, seed: int) -> tuple[np.ndarray, float]:
    """One episode of Pendulum-v1 with the policy, as a user writes it."""
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=seed)
    policy.reset()
    actions, ret, reward, done = [], 0.0, 0.0, False
    while not done:
        action = policy.predict(obs, reward)
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        ret += float(reward)
        done = terminated or truncated
    env.close()
    return np.stack(actions), ret


@pytest.mark.parametrize("where", ["run", "checkpoints/step-0000002"])
@pytest.mark.parametrize("target, seed", [(-300.0, 7), (-1200.0, 10_000)])
def test_policy_acts_exactly_as_evaluate(run, monkeypatch, capsys, where, target, seed):
    path = run if where == "run" else run / where
    expected_actions, expected_return = evaluate_once(path, target, seed, monkeypatch, capsys)
    actions, ret = play(minidt.load_policy(path, target), seed)
    assert actions.dtype == np.float32 and actions.shape == (200, 1)
    np.testing.assert_array_equal(actions, expected_actions)
    assert ret == expected_return
    assert np.ptp(actions) > 0  # the actions respond to the states: the comparison is not of constants


def test_a_checkpoint_folder_is_that_checkpoint(run):
    """checkpoints/step-2 is not the run's latest model (step 3): the folder chooses what acts."""
    latest, _ = play(minidt.load_policy(run, -300.0), 0)
    older, _ = play(minidt.load_policy(run / "checkpoints" / "step-0000002", -300.0), 0)
    assert not np.array_equal(latest, older)


def test_reset_starts_a_new_episode_and_the_target_matters(run):
    policy = minidt.load_policy(run, -300.0)
    first, _ = play(policy, 3)
    again, _ = play(policy, 3)  # play() resets: the same episode again
    np.testing.assert_array_equal(first, again)
    other, _ = play(minidt.load_policy(run, -1500.0), 3)
    assert not np.array_equal(first, other)


def test_predict_checks_its_input(run):
    policy = minidt.load_policy(run, -300.0)
    with pytest.raises(ValueError, match=r"obs: expected numbers of shape \(3,\)"):
        policy.predict(np.zeros(4))
    with pytest.raises(ValueError, match="obs: expected finite"):
        policy.predict(np.array([np.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match="reward: expected a finite"):
        policy.predict(np.zeros(3), float("inf"))
    with pytest.raises(ValueError, match="target_return"):
        minidt.load_policy(run, float("nan"))
    for _ in range(policy.model.config.max_ep_len):
        policy.predict(np.zeros(3, np.float32), -1.0)
    with pytest.raises(ValueError, match="max_ep_len; call reset"):
        policy.predict(np.zeros(3, np.float32), -1.0)
    with pytest.raises(ValueError, match="RUN_DIR"):
        minidt.load_policy(run / "checkpoints", -300.0)


def test_predict_runs_under_no_grad(run, monkeypatch):
    policy = minidt.load_policy(run, -300.0)
    modes = []
    get_action = policy.model.get_action

    def spy(**batch):
        modes.append((minidt.is_grad_enabled(), policy.model.training))
        return get_action(**batch)

    monkeypatch.setattr(policy.model, "get_action", spy)
    policy.predict(np.zeros(3, np.float32))
    assert modes == [(False, False)] and minidt.is_grad_enabled()


def test_the_books_loop_runs(run):
    """The ten-line gymnasium loop of the book's training page, with its run directory replaced by this one."""
    page = (ROOT / "docs" / "training.md").read_text()
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", page, re.S) if "load_policy" in block]
    assert len(code.strip().splitlines()) <= 10
    scope: dict = {}
    exec(code.replace('"runs/my-run"', repr(str(run))), scope)
    assert np.isfinite(scope["episode_return"])
