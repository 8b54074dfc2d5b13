"""Discrete actions, BC and %BC through the trainer and the commands: CartPole from a D4RL file with integer
actions trains, evaluates (argmax and a seeded temperature) and loads as a policy that acts as `minidt evaluate`
does; BC's return input is zero in every training batch and it is evaluated once, with no target; %BC trains on
the best episodes; Key-to-Door's defaults, targets and success rate. (Bad command lines: test_cli.py.)"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import minidt
from minidt.cli import main
from minidt.report import evaluation_targets, format_conditioning, format_evaluations
from minidt.settings import KEY_TO_DOOR_STEPS, TrainSettings
from tiny_runs import cartpole_hdf5, tiny_run


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("discrete")
    data = cartpole_hdf5(tmp / "cartpole-random.hdf5", episodes=12)
    run = tiny_run(tmp / "run", data, env="CartPole-v1", steps=3, lr=0.05, hidden_size=16)
    return {"tmp": tmp, "data": data, "run": run}


def test_a_discrete_run_is_a_discrete_model_with_the_cross_entropy_baseline(cartpole, capsys):
    run = cartpole["run"]
    config = json.loads((run / "config.json").read_text())
    assert config["discrete_actions"] is True and config["action_tanh"] is False and config["act_dim"] == 2
    assert main(["evaluate", str(run), "--episodes", "2", "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "normalized" in table and len(table.strip().splitlines()) >= 1 + 5  # the header and the targets
    summary = train_summary(cartpole["tmp"] / "summary", cartpole["data"])
    p = np.array([0.5, 0.5])  # random CartPole actions: about half of each
    assert summary["constant_action_cross_entropy"] == pytest.approx(-np.sum(p * np.log(p)), rel=0.05)
    assert "constant_action_mse" not in summary and summary["evaluations"][0]["episodes"] == 2


def train_summary(out, data, **overrides) -> dict:
    tiny_run(out, data, env="CartPole-v1", final_eval_episodes=2, **overrides)
    return json.loads((out / "metrics.json").read_text())


def sent_actions(path, argv, monkeypatch, capsys) -> tuple[list[int], float]:
    """The actions `minidt evaluate` sends the environment, and the return it reports."""
    sent = []
    step = gym.vector.SyncVectorEnv.step

    def spy(self, actions):
        sent.append(int(actions[0]))
        return step(self, actions)

    monkeypatch.setattr(gym.vector.SyncVectorEnv, "step", spy)
    assert main(["evaluate", str(path), "--episodes", "1", "--json", *argv]) == 0
    (e,) = json.loads(capsys.readouterr().out)["evaluations"]
    monkeypatch.undo()
    return sent, e["return_mean"]


def play(policy: minidt.Policy, seed: int) -> tuple[list[int], float]:
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=seed)
    policy.reset(seed=seed)
    actions, ret, reward, done = [], 0.0, 0.0, False
    while not done:
        action = policy.predict(obs, reward)
        actions.append(int(action))
        obs, reward, terminated, truncated, _ = env.step(action)
        ret += float(reward)
        done = terminated or truncated
    return actions, ret


@pytest.mark.parametrize("temperature", [0.0, 2.0])
def test_load_policy_acts_as_evaluate_by_argmax_and_at_a_temperature(cartpole, monkeypatch, capsys, temperature):
    """The same seed, the same episode: argmax, and sampling at a temperature from a stream seeded like the
    environment; another seed samples another episode."""
    run = cartpole["run"]
    argv = ["--targets", "60", "--seed", "5", "--temperature", str(temperature)]
    sent, ret = sent_actions(run, argv, monkeypatch, capsys)
    policy = minidt.load_policy(run, target_return=60, temperature=temperature)
    actions, ret2 = play(policy, 5)
    assert actions == sent[:len(actions)] and ret2 == ret
    if temperature:
        assert play(policy, 5) == (actions, ret2)  # reset(seed=5) again: the same episode
        assert len({tuple(play(policy, s)[0]) for s in range(6, 10)}) > 1
    with pytest.raises(ValueError, match="^temperature: expected a finite number >= 0"):
        minidt.load_policy(run, target_return=60, temperature=-1.0)


def test_behaviour_cloning_zeroes_the_return_input_and_takes_no_target(cartpole, monkeypatch):
    import minidt.train as t

    seen = []
    step = t.train_step

    def spy(model, opt, sched, batch, clip):
        seen.append(batch["returns_to_go"].copy())
        return step(model, opt, sched, batch, clip)

    monkeypatch.setattr(t, "train_step", spy)
    summary = train_summary(cartpole["tmp"] / "bc", cartpole["data"], algo="bc", steps=3)
    assert len(seen) == 3 and all((r == 0).all() for r in seen)
    (e,) = summary["evaluations"]  # one evaluation, no target
    assert e["target_return"] is None and summary["rank_correlation"] is None and summary["label"] == "BC"
    assert "none (BC)" in format_evaluations(summary["evaluations"])
    assert "behaviour cloning" in format_conditioning(summary)
    run = json.loads((cartpole["tmp"] / "bc" / "run.json").read_text())
    assert run["preprocess"]["zero_returns"] is True and run["settings"]["algo"] == "bc"
    policy = minidt.load_policy(cartpole["tmp"] / "bc", target_return=123.0)
    assert play(policy, 3) == play(minidt.load_policy(cartpole["tmp"] / "bc", target_return=-5.0), 3)
    assert (cartpole["tmp"] / "bc" / "return_conditioning.png").exists()


def test_percent_bc_trains_on_the_best_episodes(cartpole):
    summary = train_summary(cartpole["tmp"] / "pbc", cartpole["data"], algo="bc", top_percent=25.0)
    run = json.loads((cartpole["tmp"] / "pbc" / "run.json").read_text())
    everything = minidt.data.load_dataset(cartpole["data"]).returns
    assert sorted(run["dataset_returns"]["all"]) == sorted(everything)[-3:]  # 25 % of 12 episodes
    assert summary["label"] == "%BC" and summary["top_percent"] == 25.0 and "top 25 %" in summary["dataset"]


def test_key_to_door_defaults_targets_and_success_rate():
    s = TrainSettings.from_preset("quick", env="minidt/KeyToDoor-v0")
    assert (s.dataset, s.K, s.steps, s.eval_every, s.final_eval_episodes) == ("random", 40, KEY_TO_DOOR_STEPS,
                                                                               KEY_TO_DOOR_STEPS // 4, 100)
    assert TrainSettings.from_preset("paper", env="keytodoor").K == 40  # the whole episode under any preset
    assert TrainSettings.from_preset("quick", env="keytodoor", steps=50, K=10).K == 10  # a flag wins
    assert TrainSettings.from_preset("quick", env="CartPole-v1") == TrainSettings(env="CartPole-v1")
    assert evaluation_targets([0.0, 1.0, 0.0], env="minidt/KeyToDoor-v0") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert TrainSettings(algo="bc", top_percent=10).label == "%BC" and TrainSettings().label == "DT"
    with pytest.raises(ValueError, match="^algo: expected one of dt, bc, td3bc, got 'cql'"):
        TrainSettings(algo="cql")
    with pytest.raises(ValueError, match=r"^top_percent: expected a percentage in \(0, 100\], got 0"):
        TrainSettings(top_percent=0)


def test_a_key_to_door_run_reports_its_success_rate(cache, tmp_path, capsys):
    """Its defaults (the random tier, K 40), a tiny model: success rates at targets 0 to 1, in the summary and in
    `minidt evaluate`'s table."""
    from minidt.train import train

    out = tmp_path / "k2d"
    s = TrainSettings.from_preset("quick", env="minidt/KeyToDoor-v0", dataset_episodes=40, steps=2, hidden_size=8,
                                  n_layer=1, n_head=2, eval_every=0, final_eval_episodes=3, workers=1)
    summary = train(s, out, progress=False)
    assert [e["target_return"] for e in summary["evaluations"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(e["success_rate"] == e["return_mean"] for e in summary["evaluations"])  # reward 1 on success
    assert summary["success_rate"] == summary["evaluations"][-1]["success_rate"]
    assert json.loads((out / "run.json").read_text())["settings"]["K"] == 40
    assert main(["evaluate", str(out), "--targets", "1", "--episodes", "2", "--quiet"]) == 0
    assert "success" in capsys.readouterr().out
