"""Rollout clips: watch the return conditioning. One episode per target return, all from the same initial state,
rendered by gymnasium (render_mode "rgb_array": no display needed) and written as animated GIFs with imageio:
one clip per target, and all of them side by side (`minidt evaluate RUN_DIR --video DIR`).

The loop is `minidt.evaluate.rollout`'s (its EpisodeWindow: the same context, return-to-go update and
`get_action`), with one environment per target and a frame kept every EVERY steps; each frame is labelled with its
target and the return earned so far.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .evaluate import EpisodeWindow, Preprocess
from .layers.module import no_grad
from .model import DecisionTransformerModel

SIZE = 160  # pixels: each clip is scaled to SIZE x SIZE (Pendulum renders 500 x 500)
EVERY = 2  # keep every 2nd step: 100 frames for a 200-step Pendulum episode
FPS = 25


@no_grad()
def record(model: DecisionTransformerModel, env_id: str, targets: Sequence[float], pre: Preprocess, K: int,
           seed: int = 0, max_steps: int | None = None, temperature: float = 0.0) -> list[dict]:
    """One episode per target, all started from seed `seed` (the same initial state; a discrete model sampling
    at a temperature > 0 draws from a stream seeded `seed` too, as `rollout` does). Returns per target
    {"target_return", "return", "frames": (n_frames, SIZE, SIZE, 3) uint8}. A behaviour-cloning model
    (pre.zero_returns) plays one episode with no target (target_return None), whatever `targets` holds."""
    import gymnasium as gym

    from . import keytodoor  # noqa: F401  (registers minidt/KeyToDoor-v0, which renders too)

    model.eval()
    targets = [None] if pre.zero_returns else [float(x) for x in targets]
    N = len(targets)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # off-screen: SDL would look for a display and complain
    try:
        envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id, render_mode="rgb_array") for _ in range(N)],
                                        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    except gym.error.DependencyNotInstalled as e:
        raise ValueError(f'--video: rendering {env_id} needs pygame: pip install "minidt[video]" ({e})') from e
    try:
        L = min(max_steps or envs.envs[0].spec.max_episode_steps or model.config.max_ep_len, model.config.max_ep_len)
        obs, _ = envs.reset(seed=[seed] * N)
        window = EpisodeWindow([t or 0.0 for t in targets], pre, K, L, model.config.state_dim, model.config.act_dim,
                               model.config.discrete_actions, temperature, [seed] * N)
        returns = np.zeros(N)
        alive = np.ones(N, bool)
        frames = [[] for _ in range(N)]
        for t in range(L):
            if t % EVERY == 0:
                for i, frame in enumerate(envs.render()):
                    if alive[i]:
                        top = "BC, no target" if targets[i] is None else f"target {targets[i]:.1f}"
                        frames[i].append(_label(frame, top, f"return {returns[i]:.1f}"))
            obs, reward, terminated, truncated, _ = envs.step(window.act(model, t, obs))
            returns += np.where(alive, reward, 0.0)
            window.earn(t, reward)
            alive &= ~(terminated | truncated)
            if not alive.any():
                break
    finally:
        envs.close()
    return [{"target_return": target, "return": float(r), "frames": np.stack(f)}
            for target, r, f in zip(targets, returns, frames)]


def _label(frame: np.ndarray, top: str, bottom: str) -> np.ndarray:
    """frame (H, W, 3) uint8 -> (SIZE, SIZE, 3), with two lines of text."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(frame).resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(image)
    draw.text((4, 2), top, fill=(0, 0, 0))
    draw.text((4, SIZE - 13), bottom, fill=(0, 0, 0))
    return np.asarray(image)


def side_by_side(clips: list[dict]) -> np.ndarray:
    """The clips' frames next to each other, -> (n_frames, SIZE, n * SIZE, 3); a clip that ended early holds its
    last frame."""
    n = max(len(c["frames"]) for c in clips)
    padded = [np.concatenate([c["frames"], np.repeat(c["frames"][-1:], n - len(c["frames"]), axis=0)])
              for c in clips]
    return np.concatenate(padded, axis=2)


def write_gif(frames: np.ndarray, path: "str | os.PathLike") -> Path:
    """frames (n, H, W, 3) uint8 -> an animated GIF at `path` (looping), written atomically."""
    import imageio.v3 as iio

    from .files import atomic_write

    atomic_write(path, lambda tmp: iio.imwrite(tmp, frames, extension=".gif", duration=1000 / FPS, loop=0))
    return Path(path)


def write_clips(clips: list[dict], directory: "str | os.PathLike") -> list[Path]:
    """One GIF per target (target_R.gif) and all of them side by side (targets.gif) in `directory`."""
    directory = Path(directory)
    paths = [write_gif(c["frames"], directory / ("bc.gif" if c["target_return"] is None else
                                                 f"target_{c['target_return']:.1f}.gif")) for c in clips]
    return paths + [write_gif(side_by_side(clips), directory / "targets.gif")]


def record_run(path: "str | os.PathLike", directory: "str | os.PathLike", targets: Sequence[float],
               env: str | None = None, seed: int = 0, temperature: float = 0.0) -> list[Path]:
    """`minidt evaluate PATH --video DIR`: the run's model (its latest, or the checkpoints/step-N that `path`
    names) at each target, one clip each, plus all side by side; -> the GIF paths."""
    from .data import gym_spec
    from .runs import load_run

    info, model = load_run(path)
    spec = gym_spec(env or info.env, "--env")
    pre = info.pre
    pre.action_low, pre.action_high = spec["action_low"], spec["action_high"]
    return write_clips(record(model, spec["id"], targets, pre, info.settings.K, seed, temperature=temperature),
                       directory)
