"""The trainer and the offline-RL commands: resume is bit-identical, a diverged loss stops with the last good
checkpoint intact, `minidt train` runs end to end through the real CLI, and bad input exits 2 with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import require
from layer_helpers import twin_dropout
from minidt import DecisionTransformerModel
from minidt.checkpoint import read_state
from minidt.cli import main
from minidt.train import (TrainSettings, TrainingDiverged, evaluation_targets, latest_checkpoint, spearman,
                          train)

ROOT = Path(__file__).resolve().parents[1]


def tiny(**overrides) -> TrainSettings:
    s = TrainSettings(env="Pendulum-v1", dataset="medium-replay", steps=6, K=5, batch_size=4, hidden_size=8,
                      n_layer=1, n_head=2, warmup_steps=3, log_every=1, checkpoint_every=2, final_eval_episodes=0,
                      seed=3)
    return replace(s, **overrides)


def optimizer_state(run_dir: Path) -> dict:
    from minidt.checkpoint import load_safetensors

    ckpt = latest_checkpoint(run_dir)
    return {**load_safetensors(ckpt / "optimizer.safetensors"),
            "trainer": json.loads((ckpt / "trainer_state.json").read_text())}


def test_resume_is_bit_identical(cache, tmp_path, backend):
    """N steps, then resume to 2N, equals 2N steps straight: weights, optimizer moments, RNG states (the GPU's
    dropout generator on cupy), metrics. On every backend: no step may depend on anything a checkpoint lacks
    (atomic adds, a buffer's history)."""
    train(tiny(steps=8, backend=backend.name), tmp_path / "straight", progress=False)
    train(tiny(steps=4, backend=backend.name), tmp_path / "resumed", progress=False)
    train(tiny(steps=8, backend=backend.name), tmp_path / "resumed", resume=True, progress=False)
    a, b = read_state(tmp_path / "straight"), read_state(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    oa, ob = optimizer_state(tmp_path / "straight"), optimizer_state(tmp_path / "resumed")
    assert oa["trainer"] == ob["trainer"]
    for k in oa:
        if k != "trainer":
            np.testing.assert_array_equal(oa[k], ob[k], err_msg=k)

    def losses(run):
        return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]

    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed") and len(losses(tmp_path / "straight")) == 8


def test_resume_drops_metrics_logged_after_the_checkpoint(cache, tmp_path):
    run = tmp_path / "run"
    train(tiny(steps=5, checkpoint_every=4), run, progress=False)  # checkpoints at 4 and 5
    (run / "latest").write_text("checkpoints/step-0000004\n")  # as if it had crashed after step 5's log line
    train(tiny(steps=6, checkpoint_every=4), run, resume=True, progress=False)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(cache, tmp_path, monkeypatch):
    import minidt.train as t

    calls = {"n": 0}
    real = t.dt_loss

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss, grads = real(*args, **kwargs)
        return (loss * float("nan") if calls["n"] == 5 else loss), grads

    monkeypatch.setattr(t, "dt_loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 5.*checkpoints/step-0000004"):
        train(tiny(steps=8), run, progress=False)
    assert latest_checkpoint(run).name == "step-0000004"
    state = read_state(latest_checkpoint(run))
    assert all(np.isfinite(v).all() for v in state.values())
    assert not list((run / "checkpoints").glob(".*"))  # no half-written checkpoint left behind
    DecisionTransformerModel.from_pretrained(run)  # the run directory's model copy is whole too


def test_a_nan_between_logging_steps_stops_within_the_window(cache, tmp_path, monkeypatch):
    """Losses are read once per logging window (a read stalls a GPU); a NaN at step 5 of a 4-step window is
    caught at step 8, before the checkpoint there, and the checkpoint of step 4 stays the last."""
    import minidt.train as t

    calls = {"n": 0}
    real = t.dt_loss

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss, grads = real(*args, **kwargs)
        return (loss * float("nan") if calls["n"] == 5 else loss), grads

    monkeypatch.setattr(t, "dt_loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"loss is nan in steps 5-8.*checkpoints/step-0000004"):
        train(tiny(steps=12, log_every=4, checkpoint_every=4), run, progress=False)
    assert latest_checkpoint(run).name == "step-0000004"
    assert all(np.isfinite(v).all() for v in read_state(latest_checkpoint(run)).values())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["steps"]) for r in records] == [(1, 1), (4, 3)]  # step 1, then the mean of steps 2-4


def test_training_lowers_the_loss(cache, tmp_path):
    """On the expert tier (actions a near-deterministic function of the state) the action MSE on a fixed batch
    falls well below the untrained model's."""
    from minidt.data import SegmentSampler, load_dataset
    from minidt.evaluate import Preprocess
    from minidt.losses import dt_loss
    from minidt.train import build_model, training_batch

    s = tiny(dataset="expert", steps=80, hidden_size=32, batch_size=32, K=10, lr=3e-3, warmup_steps=10,
             dropout=0.0, checkpoint_every=80)
    train(s, tmp_path / "run", progress=False)
    data = load_dataset("expert", env="pendulum", progress=False)
    pre = Preprocess.from_dict(json.loads((tmp_path / "run" / "run.json").read_text())["preprocess"])
    batch = training_batch(SegmentSampler(data, K=10, max_ep_len=200, seed=99), pre, 256)

    def loss(model):
        out = model.eval()(**batch)
        return float(dt_loss(out, *(batch[k] for k in ("states", "actions", "returns_to_go", "attention_mask")))[0])

    before = loss(build_model(s, 3, 1, 200))  # the same seed: the run's initial weights
    after = loss(DecisionTransformerModel.from_pretrained(tmp_path / "run"))
    assert after < 0.5 * before, (before, after)


def test_one_training_step_on_a_device_backend(cache, tmp_path, device_backend):
    """The whole step (sampler batch, forward, loss, backward, clip, AdamW, checkpoint) on a device gives the
    NumPy step's weights (dropout only where the device draws NumPy's masks)."""
    b = device_backend
    s = tiny(steps=2, dtype="float64", dropout=twin_dropout(b, 0.1))
    train(s, tmp_path / "host", progress=False)
    train(replace(s, backend=b.name), tmp_path / "dev", progress=False)
    a, b = read_state(tmp_path / "host"), read_state(tmp_path / "dev")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_minidt_train_end_to_end_through_the_cli(cache, tmp_path):
    """The README's main job on a tiny budget, as a user runs it: a subprocess of the installed command."""
    run = tmp_path / "run"
    env = {**os.environ, "MINIDT_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "minidt.cli", "train", "--steps", "30", "--out", str(run), "--eval-episodes", "2",
           "--seed", "1", "--quiet"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "run directory" in p.stdout and "normalized" in p.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["evaluations"]) >= 5
    for e in metrics["evaluations"]:
        assert set(e) >= {"target_return", "return_mean", "return_std", "normalized_score_mean", "episodes"}
        assert e["episodes"] == 2
    targets = [e["target_return"] for e in metrics["evaluations"]]
    run_json = json.loads((run / "run.json").read_text())
    assert min(targets) == pytest.approx(run_json["dataset_returns"]["min"])
    assert max(targets) > run_json["dataset_returns"]["max"]  # and one beyond the data
    for png in ("loss.png", "return_conditioning.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "config.json").exists() and (run / "model.safetensors").exists()

    # `minidt evaluate RUN_DIR --json` reads it back
    p = subprocess.run([sys.executable, "-m", "minidt.cli", "evaluate", str(run), "--targets", "-200",
                        "--episodes", "2", "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    (e,) = json.loads(p.stdout)["evaluations"]
    assert e["target_return"] == -200 and e["episodes"] == 2 and "normalized_score_mean" in e

    # the checkpoint is transformers' too
    require("torch")
    transformers = require("transformers")
    ref = transformers.DecisionTransformerModel.from_pretrained(run)
    assert ref.config.state_dim == 3 and ref.config.hidden_size == 64


@pytest.mark.parametrize("argv, message", [
    (["train", "--env", "NoSuchEnv-v0"], "not a gymnasium environment"),
    (["train", "--dataset", "superb"], "expected a tier"),
    (["train", "--dataset", "missing.hdf5"], "no such file"),
    (["train", "--preset", "huge"], "preset: expected one of paper, quick"),
    (["train", "--resume", "."], "not a run directory"),
    (["generate", "--env", "pendulum", "--tier", "legendary"], "tier 'legendary': expected one of"),
    (["generate", "--env", "cartpole", "--tier", "expert"], "no generated datasets"),
    (["evaluate", "."], "not a run directory"),
    (["reference-returns", "--env", "hopper"], "no generated datasets"),
])
def test_bad_input_is_one_line_and_exit_2(cache, capsys, argv, message):
    assert main(argv + (["--quiet"])) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_evaluate_rejects_a_checkpoint_of_another_environment(cache, tmp_path, capsys):
    train(tiny(steps=1), tmp_path / "run", progress=False)
    assert main(["evaluate", str(tmp_path / "run"), "--env", "MountainCarContinuous-v0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "state_dim 3" in err and "size 2" in err


def test_evaluation_targets_span_the_data_and_beyond():
    returns = np.array([-1000.0] + [-600.0] * 8 + [-250.0] * 10 + [-200.0])  # 20 episodes: the best 2 average -225
    t = evaluation_targets(returns)
    assert t == [-1000.0, -800.0, -600.0, -400.0, -225.0, -200.0, 0.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) == 0.0
