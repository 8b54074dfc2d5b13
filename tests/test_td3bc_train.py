"""td3bc/train.py, checkpoint.py, report.py: `minidt train --algo td3bc` writes a run directory like the Decision
Transformer's (resume bit for bit, a diverged loss stops at the last good checkpoint, metrics, loss plot), and
`minidt evaluate` rolls its actor out; `--delayed-rewards` for both algorithms. (Bad command lines: test_cli.py.)"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import minidt

from minidt.checkpoint import load_safetensors
from minidt.cli import main
from minidt.runs import latest_checkpoint, read_run_info, read_trainer_state
from minidt.settings import TrainSettings
from minidt.td3bc.checkpoint import load_actor
from minidt.td3bc.train import train_td3bc
from minidt.train import TrainingDiverged, load_data, train
from tiny_runs import pendulum_hdf5


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return pendulum_hdf5(tmp_path_factory.mktemp("data") / "pendulum-random.hdf5")


def tiny(data: Path, **overrides) -> TrainSettings:
    s = TrainSettings(env="Pendulum-v1", dataset=str(data), algo="td3bc", steps=6, batch_size=8, hidden_size=8,
                      log_every=1, checkpoint_every=2, final_eval_episodes=0, seed=3)
    return replace(s, **overrides)


def checkpoint_state(run: Path) -> dict:
    ckpt = latest_checkpoint(run)
    return {**load_safetensors(ckpt / "td3bc.safetensors"), **load_safetensors(ckpt / "optimizer.safetensors"),
            "trainer": json.loads((ckpt / "trainer_state.json").read_text())}


def test_resume_is_bit_identical(data, tmp_path, backend):
    """N steps, then resume to 2N, equals 2N steps straight: the four networks, both Adams' moments, the sampler,
    the smoothing noise, total_it (the delayed updates: N odd, so the resumed run starts on an actor step)."""
    train_td3bc(tiny(data, steps=10, backend=backend.name), tmp_path / "straight", progress=False)
    train_td3bc(tiny(data, steps=5, checkpoint_every=5, backend=backend.name), tmp_path / "resumed", progress=False)
    train_td3bc(tiny(data, steps=10, backend=backend.name), tmp_path / "resumed", resume=True, progress=False)
    a, b = checkpoint_state(tmp_path / "straight"), checkpoint_state(tmp_path / "resumed")
    assert a.keys() == b.keys() and a["trainer"] == b["trainer"] and a["trainer"]["total_it"] == 10
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    def records(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    strip = [{k: v for k, v in r.items() if k != "steps_per_s"} for r in records(tmp_path / "straight")]
    assert strip == [{k: v for k, v in r.items() if k != "steps_per_s"} for r in records(tmp_path / "resumed")]
    assert [r["actor_loss"] is None for r in strip] == [True, False] * 5  # odd steps have no actor update


def test_a_run_writes_its_files_and_minidt_evaluate_reads_it(data, tmp_path, capsys):
    run = tmp_path / "run"
    summary = train_td3bc(tiny(data, steps=4, final_eval_episodes=2, eval_every=2, eval_episodes=1), run,
                          progress=False)
    assert {p.name for p in run.iterdir()} == {"run.json", "latest", "metrics.jsonl", "metrics.json", "loss.png",
                                                "td3bc.safetensors", "checkpoints"}
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = read_run_info(run)
    assert info.settings.algo == "td3bc" and info.raw["td3bc"]["alpha"] == 2.5 and info.raw["td3bc"]["hidden"] == 8
    np.testing.assert_array_equal(info.pre.action_low, [-2.0])
    (e,) = summary["evaluations"]
    assert e["target_return"] is None and e["episodes"] == 2 and "normalized_score_mean" in e
    assert summary["best_normalized_score"] == e["normalized_score_mean"] and summary["algo"] == "td3bc"
    assert json.loads((run / "metrics.json").read_text()) == summary
    during = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "evaluations" in r]
    assert [r["step"] for r in during] == [2]  # every eval_every steps, the last step left to the final evaluation
    assert main(["evaluate", str(run), "--episodes", "2", "--json", "--quiet"]) == 0
    (again,) = json.loads(capsys.readouterr().out)["evaluations"]
    assert again["returns"] == e["returns"]  # the same actor, the same seeds
    assert main(["evaluate", str(run / "checkpoints" / "step-0000002"), "--episodes", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[0] == "none"  # no target: one row
    _, actor = load_actor(run)
    assert actor.net.l1.weight.shape == (8, 3)
    with pytest.raises(ValueError, match="is a td3bc run, which holds no Decision Transformer"):
        minidt.load_policy(run, target_return=-200.0)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    import minidt.td3bc.train as t

    calls, real = {"n": 0}, t.td3bc_step

    def poisoned(*args):
        calls["n"] += 1
        loss_q, loss_pi = real(*args)
        return (loss_q * float("nan") if calls["n"] == 5 else loss_q), loss_pi

    monkeypatch.setattr(t, "td3bc_step", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"critic loss is nan at step 5.*checkpoints/step-0000004"):
        train_td3bc(tiny(data, steps=8), run, progress=False)
    assert latest_checkpoint(run).name == "step-0000004"
    assert all(np.isfinite(v).all() for v in load_safetensors(run / "td3bc.safetensors").values())


def test_each_trainer_refuses_the_others_algorithm(data, tmp_path):
    with pytest.raises(ValueError, match="algo: minidt.train.train trains a Decision Transformer.*train_td3bc"):
        train(tiny(data), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="algo: train_td3bc trains TD3\\+BC"):
        train_td3bc(replace(tiny(data), algo="dt"), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="algo td3bc: the presets and DataParallel workers"):
        replace(tiny(data), workers=2)
    assert TrainSettings.from_preset("quick", algo="td3bc").batch_size == 256  # the paper's, not the preset's 64
    assert TrainSettings.from_preset("quick", algo="td3bc", batch_size=32).batch_size == 32


def test_delayed_rewards_reach_both_trainers(data, tmp_path):
    """--delayed-rewards: the dataset each trainer loads has every episode's return on its last step; the run
    records it; the DT trainer takes it too."""
    delayed, _, _ = load_data(tiny(data, delayed_rewards=True), progress=False)
    original, _, _ = load_data(tiny(data), progress=False)
    np.testing.assert_array_equal(delayed.returns, original.returns)
    assert all(not e.rewards[:-1].any() for e in delayed)
    assert main(["train", "--algo", "td3bc", "--dataset", str(data), "--steps", "2", "--eval-episodes", "0",
                 "--delayed-rewards", "--out", str(tmp_path / "td3bc"), "--quiet"]) == 0
    assert main(["train", "--dataset", str(data), "--steps", "1", "--eval-episodes", "0", "--delayed-rewards",
                 "--out", str(tmp_path / "dt"), "--quiet"]) == 0
    for name in ("td3bc", "dt"):
        info = read_run_info(tmp_path / name)
        assert info.settings.delayed_rewards and info.dataset.endswith("-delayed"), name
    dt = read_run_info(tmp_path / "dt")
    assert dt.pre.delayed_rewards and dt.raw["preprocess"]["delayed_rewards"] is True  # DT's rollouts keep R
    run_json = tmp_path / "dt" / "run.json"  # a run.json from before the flag: the settings say
    older = json.loads(run_json.read_text())
    del older["preprocess"]["delayed_rewards"]
    run_json.write_text(json.dumps(older))
    assert read_run_info(tmp_path / "dt").pre.delayed_rewards
    assert read_trainer_state(latest_checkpoint(tmp_path / "td3bc"), "td3bc")["total_it"] == 2


def test_the_console_says_what_it_trains(data, tmp_path, capsys):
    train_td3bc(tiny(data, steps=2), tmp_path / "run", progress=True)  # 355 = actor 113 + 2 critics x 121
    out, err = capsys.readouterr()
    assert out.splitlines()[:3] == [
        "training Pendulum-v1 on pendulum-random: 4 episodes, 800 transitions; TD3+BC",
        "actor and twin critics: 355 parameters (hidden 8, alpha 2.5, discount 0.99, tau 0.005, actor every 2 "
        "steps); 2 steps of batch 8 on numpy (float32)",
        f"run directory: {tmp_path / 'run'}"]
    assert "critic=" in err  # the progress bar shows the critic's loss from step 1
