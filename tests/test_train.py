"""The trainer and the offline-RL commands: resume is bit-identical, a diverged loss stops with the last good
checkpoint intact, `minidt train` runs end to end through the real CLI; run directories are never overwritten,
clean-up keeps what `latest` names, SIGINT and SIGTERM checkpoint and exit 130; the console says what it trains.
(Bad command lines: test_cli.py.)"""

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
from minidt.report import evaluation_targets, spearman
from minidt.runs import latest_checkpoint, prune_checkpoints, read_trainer_state
from minidt.train import TrainSettings, TrainingDiverged, train
from tiny_runs import pendulum_hdf5, tiny_run, tiny_settings

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


def poison_loss_at(step: int, monkeypatch) -> None:
    """The trainer's loss turns NaN at training step `step` (its gradients stay finite)."""
    import minidt.train as t

    calls = {"n": 0}
    real = t.dt_loss

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss, grads = real(*args, **kwargs)
        return (loss * float("nan") if calls["n"] == step else loss), grads

    monkeypatch.setattr(t, "dt_loss", poisoned)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(cache, tmp_path, monkeypatch):
    poison_loss_at(5, monkeypatch)
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
    poison_loss_at(5, monkeypatch)
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


def test_dataparallel_trains_as_the_model_alone(cache, tmp_path, monkeypatch):
    """The trainer wraps the model in DataParallel (uneven splits here: 4 rows over 3 workers, dropout on);
    workers=1 is the model alone: the same weights to round-off, in float64."""
    from minidt.parallel import DataParallel

    split = []
    in_threads = DataParallel.in_threads
    monkeypatch.setattr(DataParallel, "in_threads", lambda self, calls: split.append(len(calls)) or
                        in_threads(self, calls))
    train(tiny(steps=4, dtype="float64", workers=1), tmp_path / "one", progress=False)
    assert split == []
    train(tiny(steps=4, dtype="float64", workers=3), tmp_path / "three", progress=False)
    assert split == [3] * 8  # a forward and a backward per step
    a, b = read_state(tmp_path / "one"), read_state(tmp_path / "three")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-10, atol=1e-12, err_msg=k)


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


# --- run directories ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return pendulum_hdf5(tmp_path_factory.mktemp("data") / "pendulum-random.hdf5")


def test_a_run_is_never_overwritten_unless_forced(data, tmp_path):
    run = tiny_run(tmp_path / "run", data)  # checkpoints at steps 1 and 2
    before = (run / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="already holds a run.*--resume.*--force"):
        train(tiny_settings(data, steps=1), run, progress=False)
    assert (run / "metrics.jsonl").read_text() == before
    train(tiny_settings(data, steps=1, seed=5), run, progress=False, force=True)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000001"]  # none of the old run's
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert json.loads((run / "run.json").read_text())["settings"]["seed"] == 5


def test_checkpoint_clean_up_orders_by_step_and_keeps_latest(tmp_path):
    """By step number (step-10000000 is newer than step-9999999, though it sorts first as a string), and never the
    checkpoint `latest` names, even when it is old (a run resumed from an earlier checkpoint)."""
    for step in (5, 9_999_999, 10_000_000, 10_000_001):
        (tmp_path / "checkpoints" / f"step-{step:07d}").mkdir(parents=True)
    (tmp_path / "latest").write_text("checkpoints/step-0000005\n")
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-0000005", "step-10000000", "step-10000001"]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_during_training_checkpoints_and_exits_130(data, tmp_path, sig):
    """A real signal to a real training process: it finishes the step under way, writes a checkpoint there, says
    where it is and how to resume, and exits 130; the run then resumes from it."""
    import signal
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "minidt", "train", "--dataset", str(data), "--steps", "1000000", "--out", str(run),
           "--checkpoint-every", "1000000", "--eval-episodes", "0", "--quiet"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run / "metrics.jsonl").exists():  # step 1 is logged: the loop is running
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.05)
    p.send_signal(getattr(signal, sig))
    out, err = p.communicate(timeout=240)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    step = read_trainer_state(latest_checkpoint(run))["step"]
    assert 1 <= step < 1_000_000
    assert f"interrupted ({sig}) at step {step}; checkpoint written: {run}/checkpoints/step-{step:07d}" in err, err
    assert f"resume with: minidt train --resume {run}" in err, err
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == step
    DecisionTransformerModel.from_pretrained(latest_checkpoint(run))
    assert main(["train", "--resume", str(run), "--steps", str(step + 1), "--quiet"]) == 0
    assert read_trainer_state(latest_checkpoint(run))["step"] == step + 1


# --- the console, the summary and the plots ----------------------------------------------------------------------

def test_the_console_says_what_it_trains(data, tmp_path, capsys):
    from minidt.train import build_model

    s = tiny_settings(data)
    train(s, tmp_path / "run", progress=True)
    out, err = capsys.readouterr()
    params = build_model(s, 3, 1, 200).num_parameters()
    assert out.splitlines()[:3] == [
        "training DT in Pendulum-v1 on pendulum-random: 4 episodes, 800 steps; preset quick",
        f"model: {params:,} parameters (hidden 8, layers 1, heads 2, context K 4); 2 steps of batch 4 on numpy "
        "(float32)",
        f"run directory: {tmp_path / 'run'}"]
    assert "loss=" in err  # the progress bar shows the loss (step 1 is logged)


def test_flat_returns_are_called_flat_not_ranked():
    """A model that scores the same at every target (within the episodes' spread) gets no rank correlation."""
    from minidt.report import conditioning, format_conditioning

    def ev(target, mean, std):
        return {"target_return": target, "return_mean": mean, "return_std": std}

    flat = [ev(-1000, -700, 100), ev(-500, -690, 110), ev(-100, -640, 90), ev(200, -600, 100)]
    c = conditioning(flat, dataset_best=-100)
    assert c["returns_flat"] and c["rank_correlation"] is None and c["returns_range"] == 60
    line = format_conditioning({"best_normalized_score": 10.0, **c})
    assert "flat" in line and "rank correlation" not in line
    follows = [ev(-1000, -990, 50), ev(-500, -520, 60), ev(-100, -150, 40)]
    c = conditioning(follows, dataset_best=-100)
    assert not c["returns_flat"] and c["rank_correlation"] == pytest.approx(1.0)
    assert "rank correlation of achieved with target return 1.00" in format_conditioning(
        {"best_normalized_score": None, **c})


def test_constant_action_baseline_is_the_variance_of_the_normalized_actions(data):
    from minidt.data import load_dataset
    from minidt.evaluate import Preprocess
    from minidt.report import constant_action_mse

    d = load_dataset(data, env="Pendulum-v1")
    pre = Preprocess(d.state_mean, d.state_std, d.scale, np.array([-2.0]), np.array([2.0]))
    a = np.concatenate([ep.actions for ep in d.episodes]).astype(np.float64) / 2.0  # [-2, 2] -> [-1, 1]
    assert constant_action_mse(d, pre) == pytest.approx(float(np.mean((a - a.mean()) ** 2)), rel=1e-9)
    assert constant_action_mse(d, pre) == pytest.approx(1 / 3, rel=0.1)  # uniform random actions on [-1, 1]


def test_loss_plot_starts_at_step_1_with_plain_ticks_and_the_baseline(monkeypatch, tmp_path):
    import minidt.plots as plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    monkeypatch.setattr(plots._pyplot(), "close", lambda fig: None)
    steps = [1, 50, 100, 150, 200, 20_000]
    plots.plot_loss(steps, [0.4, 0.2, 0.1, 0.08, 0.06, 0.05], tmp_path / "loss.png", baseline=0.3)
    (ax,) = figures[0].axes
    assert ax.lines[0].get_xdata()[0] == 1
    assert any(list(line.get_ydata()) == [0.3, 0.3] for line in ax.lines)  # the constant-action line
    figures[0].canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all(not any(c in s for c in "$^") for s in labels), labels  # 0.05, 0.1, 0.2: no 10^x
    assert "20,000" in [t.get_text() for t in ax.get_xticklabels()]
