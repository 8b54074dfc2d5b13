"""Rollout clips (minidt/video.py): the recorded episodes are rollout()'s episodes, frame by frame, and
`minidt evaluate RUN --video DIR` writes one readable GIF per target plus all of them side by side."""

from __future__ import annotations

import numpy as np
from test_evaluate import pendulum_pre, small_model
from test_train import tiny

from minidt.cli import main
from minidt.evaluate import rollout
from minidt.train import train
from minidt.video import EVERY, SIZE, record, side_by_side



def test_recorded_episodes_are_the_rollouts_episodes():
    model, pre = small_model(3, dtype="float32"), pendulum_pre()
    targets, steps = [-500.0, -100.0], 8
    clips = record(model, "Pendulum-v1", targets, pre, K=4, seed=5, max_steps=steps)
    expected = rollout(model, "Pendulum-v1", targets, 1, pre, K=4, seed=5, max_steps=steps)
    for clip, result in zip(clips, expected):
        assert clip["target_return"] == result["target_return"]
        np.testing.assert_allclose(clip["return"], result["returns"][0], rtol=1e-6)
        frames = clip["frames"]
        assert frames.shape == (steps // EVERY, SIZE, SIZE, 3) and frames.dtype == np.uint8
        assert np.any(frames[0] != frames[-1])  # the pendulum moved
    both = side_by_side(clips)
    assert both.shape == (steps // EVERY, SIZE, 2 * SIZE, 3)
    assert np.array_equal(both[:, :, SIZE:], clips[1]["frames"])


def test_evaluate_video_writes_one_gif_per_target(cache, tmp_path, capsys):  # noqa: F811
    import imageio.v3 as iio

    train(tiny(steps=1), tmp_path / "run", progress=False)
    argv = ["evaluate", str(tmp_path / "run"), "--targets", "-900", "-100", "--episodes", "1", "--quiet",
            "--video", str(tmp_path / "clips")]
    assert main(argv) == 0
    assert "clips:" in capsys.readouterr().err
    names = sorted(p.name for p in (tmp_path / "clips").iterdir())
    assert names == ["target_-100.0.gif", "target_-900.0.gif", "targets.gif"], names
    one, both = iio.imread(tmp_path / "clips" / "target_-900.0.gif"), iio.imread(tmp_path / "clips" / "targets.gif")
    assert one.shape[1:3] == (SIZE, SIZE) and both.shape[1:3] == (SIZE, 2 * SIZE)
    assert len(one) == 200 // EVERY  # a whole Pendulum episode


def test_discrete_clips_cartpole_and_key_to_door_and_bc(tmp_path):
    """CartPole renders its argmax episode, the same as rollout's; Key-to-Door renders its rooms; a BC model plays
    one clip with no target (bc.gif)."""
    from test_evaluate import cartpole_model, cartpole_pre

    from minidt import DecisionTransformerModel
    from minidt.evaluate import Preprocess
    from minidt.video import write_clips

    model = cartpole_model()
    clips = record(model, "CartPole-v1", [20.0, 200.0], cartpole_pre(), K=3, seed=2, max_steps=10)
    expected = rollout(model, "CartPole-v1", [20.0, 200.0], 1, cartpole_pre(), K=3, seed=2, max_steps=10)
    assert [c["return"] for c in clips] == [e["returns"][0] for e in expected]
    assert clips[0]["frames"].shape[1:] == (SIZE, SIZE, 3)
    (bc,) = record(model, "CartPole-v1", [20.0, 200.0], cartpole_pre(zero_returns=True), K=3, seed=2, max_steps=6)
    assert bc["target_return"] is None
    assert sorted(p.name for p in write_clips([bc], tmp_path)) == ["bc.gif", "targets.gif"]
    k2d = DecisionTransformerModel(state_dim=7, act_dim=4, hidden_size=8, n_layer=1, n_head=2, max_ep_len=40,
                                   discrete_actions=True, seed=0)
    pre = Preprocess(np.zeros(7), np.ones(7), 1.0, np.zeros(0), np.zeros(0))
    (clip,) = record(k2d, "minidt/KeyToDoor-v0", [1.0], pre, K=40, seed=0)
    assert len(clip["frames"]) == 40 // EVERY and clip["return"] in (0.0, 1.0)
