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
