"""Generated datasets: the controllers, determinism by seed, the tiers' ordering, and the Minari cache."""

from __future__ import annotations


import gymnasium as gym
import minari
import numpy as np
import pytest

from conftest import require

import minidt.data.experts as experts
import minidt.data.generate as generate
from minidt.data import (TIERS, collect_episodes, generate_dataset, generated_dataset_id, load_dataset,
                         make_env, normalized_score)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test writes into its own cache, which is also Minari's datasets directory."""
    monkeypatch.setenv("MINIDT_CACHE", str(tmp_path))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    return tmp_path


def mean_return(buffers) -> float:
    return float(np.mean([np.sum(b.rewards) for b in buffers]))


def tier_scores(env: str, episodes: int) -> dict[str, float]:
    return {t: normalized_score(env, mean_return(collect_episodes(env, t, episodes, seed=1, progress=False)))
            for t in ("random", "medium", "expert")}


def test_tiers_are_ordered_pendulum():
    s = tier_scores("pendulum", 60)
    assert s["random"] < s["medium"] < s["expert"]
    assert abs(s["random"]) < 15 and s["expert"] > 90 and 35 < s["medium"] < 65, s


def test_tiers_are_ordered_mountaincar():
    s = tier_scores("mountaincar", 100)  # medium is bimodal (tops the hill or not)
    assert s["random"] < s["medium"] < s["expert"]
    assert abs(s["random"]) < 15 and s["expert"] > 90 and 30 < s["medium"] < 70, s


def test_tiers_are_ordered_invertedpendulum():
    require("mujoco")  # in the test extra: fails, not skips, under CI=true
    s = tier_scores("invertedpendulum", 25)
    assert s["random"] < s["medium"] < s["expert"]
    assert abs(s["random"]) < 15 and s["expert"] > 90 and 30 < s["medium"] < 70, s


def test_missing_mujoco_is_a_clear_error(monkeypatch):
    def make(*args, **kwargs):
        raise gym.error.DependencyNotInstalled("No module named 'mujoco'")

    monkeypatch.setattr(generate.gym, "make", make)
    with pytest.raises(ImportError, match=r'InvertedPendulum-v5 needs MuJoCo: pip install "minidt\[mujoco\]"'):
        make_env("invertedpendulum")


def test_experts_reach_their_goals():
    env = make_env("pendulum")
    obs, _ = env.reset(seed=0)
    for _ in range(200):
        obs, *_ = env.step(experts.pendulum_expert(obs).astype(np.float32))
    assert obs[0] > 0.99  # cos th: upright
    env = make_env("mountaincar")
    obs, _ = env.reset(seed=0)
    for t in range(999):
        obs, r, terminated, truncated, _ = env.step(experts.mountaincar_expert(obs).astype(np.float32))
        if terminated:
            break
    assert terminated and t < 200


@pytest.mark.parametrize("env, episodes", [("cartpole", 30), ("acrobot", 20), ("mountaincar-discrete", 30),
                                           ("keytodoor", 200)])
def test_tiers_are_ordered_discrete(env, episodes):
    s = tier_scores(env, episodes)
    assert s["random"] < s["medium"] < s["expert"]
    assert abs(s["random"]) < 15 and s["expert"] > 90 and 20 < s["medium"] < 80, s


def test_discrete_experts_reach_their_goals():
    """CartPole held 500 steps, Acrobot's tip above the bar and MountainCar at the flag within 200 steps, Key-to-Door
    always opened with the key."""
    for env_name, seeds, check in (("cartpole", 3, lambda t, R: t == 499 and R == 500),
                                   ("acrobot", 3, lambda t, R: t < 200),
                                   ("mountaincar-discrete", 3, lambda t, R: t < 199),
                                   ("keytodoor", 20, lambda t, R: R == 1.0)):
        env, expert = make_env(env_name), experts.EXPERTS[env_name]
        for seed in range(seeds):
            obs, _ = env.reset(seed=seed)
            R = 0.0
            for t in range(1000):
                obs, r, terminated, truncated, _ = env.step(expert(obs))
                R += r
                if terminated or truncated:
                    break
            assert check(t, R), (env_name, seed, t, R)


def test_discrete_episode_layout():
    """Minari stores action ids (T,); the dataset holds them as one-hot rows (T, n)."""
    (b,) = collect_episodes("cartpole", "random", 1, progress=False)
    T = len(b.rewards)
    assert b.actions.shape == (T,) and b.actions.dtype.kind == "i" and set(b.actions) <= {0, 1}
    data = load_dataset("random", env="CartPole-v1", episodes=3, progress=False)
    assert data.discrete_actions and data.act_dim == 2 and data.scale == 100.0
    assert (data[0].actions.sum(axis=1) == 1).all() and data[0].actions.dtype == np.float32
    np.testing.assert_array_equal(np.argmax(data[0].actions, axis=1), collect_episodes(
        "cartpole", "random", 1, progress=False)[0].actions)


def test_schedules():
    plan = generate.episode_plan("pendulum", "medium-replay", 5)
    eps = [e for _, _, e in plan]
    assert eps[0] == 1.0 and eps[-1] == pytest.approx(experts.MEDIUM_EPS["pendulum"]) and eps == sorted(eps)[::-1]
    full = [e for _, _, e in generate.episode_plan("pendulum", "full-replay", 3)]
    assert full == [1.0, 0.5, 0.0]
    me = generate.episode_plan("pendulum", "medium-expert", 3)
    assert me == generate.episode_plan("pendulum", "medium", 3) + generate.episode_plan("pendulum", "expert", 3)


def test_collection_is_deterministic_by_seed():
    a = collect_episodes("pendulum", "medium", 3, seed=4, progress=False)
    b = collect_episodes("pendulum", "medium", 3, seed=4, progress=False)
    c = collect_episodes("pendulum", "medium", 3, seed=5, progress=False)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.rewards, y.rewards)
    assert not np.array_equal(a[0].actions, c[0].actions)
    # episode i depends on (seed, tier, i) only: a longer dataset starts with the same episodes
    longer = collect_episodes("pendulum", "medium", 5, seed=4, progress=False)
    np.testing.assert_array_equal(longer[2].actions, a[2].actions)
    # medium-expert is exactly medium followed by expert
    me = collect_episodes("pendulum", "medium-expert", 2, seed=4, progress=False)
    ex = collect_episodes("pendulum", "expert", 2, seed=4, progress=False)
    for x, y in zip(me, a[:2] + ex, strict=True):
        np.testing.assert_array_equal(x.actions, y.actions)


def test_episode_layout():
    (b,) = collect_episodes("mountaincar", "expert", 1, progress=False)
    T = len(b.rewards)
    assert b.observations.shape == (T + 1, 2) and b.actions.shape == (T, 1)
    assert b.terminations[-1] and not b.terminations[:-1].any() and not b.truncations.any()
    (r,) = collect_episodes("pendulum", "random", 1, progress=False)
    assert len(r.rewards) == 200 and r.truncations[-1] and not r.terminations.any()
    assert (np.abs(r.actions) <= 2).all()


def test_generated_ids():
    assert generated_dataset_id("pendulum", "expert") == "minidt/pendulum/expert-v0"
    assert generated_dataset_id("Pendulum-v1", "medium-replay", 50, 1) == "minidt/pendulum/medium-replay-seed1-n50-v0"
    assert generated_dataset_id("mountaincar", "random", 200, 0) == "minidt/mountaincar/random-v0"
    for tier in TIERS:
        minari.dataset.minari_dataset.parse_dataset_id(generated_dataset_id("pendulum", tier, 3))
    with pytest.raises(ValueError, match="tier 'good': expected one of random, medium"):
        generated_dataset_id("pendulum", "good")
    with pytest.raises(ValueError, match="env 'LunarLander-v3': no generated datasets for it; expected one of "
                                         "pendulum"):
        generated_dataset_id("LunarLander-v3", "expert")
    assert generated_dataset_id("MountainCar-v0", "expert") == "minidt/mountaincar-discrete/expert-v0"
    assert generated_dataset_id("minidt/KeyToDoor-v0", "random", 1000) == "minidt/keytodoor/random-seed0-n1000-v0"
    assert generated_dataset_id("keytodoor", "random") == "minidt/keytodoor/random-v0"  # 10,000 episodes


def test_minari_round_trip(cache, monkeypatch):
    path = generate_dataset("pendulum", "medium", episodes=4, seed=2, progress=False)
    dataset_id = "minidt/pendulum/medium-seed2-n4-v0"
    assert path == cache / dataset_id and (path / "data").is_dir()
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]  # the temporary directory is gone
    assert dataset_id in minari.list_local_datasets()

    ds = minari.load_dataset(dataset_id)  # minari's own reader, MINARI_DATASETS_PATH pointed at the cache
    assert ds.total_episodes == 4 and ds.env_spec.id == "Pendulum-v1"
    assert ds.storage.metadata["minidt"]["tier"] == "medium"
    assert minari.get_normalized_score(ds, np.array(generate.REF_MAX_SCORE["pendulum"])) == pytest.approx(1.0)
    ours = load_dataset("medium", env="pendulum", episodes=4, seed=2, progress=False)
    fresh = collect_episodes("pendulum", "medium", 4, seed=2, progress=False)
    for e, m, f in zip(ours, ds.iterate_episodes(), fresh, strict=True):
        np.testing.assert_array_equal(e.observations, m.observations[:-1])  # T of Minari's T + 1
        np.testing.assert_array_equal(e.observations, f.observations[:-1])
        np.testing.assert_array_equal(e.actions, m.actions)
        np.testing.assert_array_equal(e.rewards, m.rewards)
        np.testing.assert_array_equal(e.truncations, m.truncations)
    assert ours.env_id == "Pendulum-v1" and ours.scale == 1000.0 and ours.metadata["minidt"]["seed"] == 2
    assert ours.name == dataset_id

    # the second call reads the cache: nothing is collected again
    monkeypatch.setattr(generate, "collect_episodes", lambda *a, **k: pytest.fail("regenerated a cached dataset"))
    assert generate_dataset("pendulum", "medium", episodes=4, seed=2) == path


def test_generation_is_deterministic_across_caches(tmp_path, monkeypatch):
    datasets = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        monkeypatch.setenv("MINIDT_CACHE", str(tmp_path / name))
        datasets.append(load_dataset("expert", env="mountaincar", episodes=2, seed=seed, progress=False))
    a, b, c = datasets
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)
    assert not np.array_equal(a[0].actions, c[0].actions)
