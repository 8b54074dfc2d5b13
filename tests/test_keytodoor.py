"""Key-to-Door: gymnasium's checks, the three rooms and their timing, the reward rule, an observation that never
says whether the key is held, and the random policy's success rate (exact, and by sampling)."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from minidt import keytodoor as k2d


def play(seed: int, policy) -> tuple[list[np.ndarray], list[float], bool, bool]:
    """One episode: its observations, rewards, whether it terminated, and whether the key was held at the end."""
    env = gym.make(k2d.ENV_ID)
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    while True:
        obs, r, terminated, truncated, info = env.step(policy(obs))
        observations.append(obs)
        rewards.append(r)
        if terminated or truncated:
            return observations, rewards, terminated, info["has_key"]


def test_gymnasium_checks_pass_and_the_spaces():
    env = gym.make(k2d.ENV_ID)
    check_env(env.unwrapped)
    assert env.action_space == gym.spaces.Discrete(4) and env.observation_space.shape == (7,)
    assert env.spec.max_episode_steps == sum(k2d.PHASES) == 40 and k2d.SIZE == 5
    img = gym.make(k2d.ENV_ID, render_mode="rgb_array")
    img.reset(seed=0)
    assert img.render().shape == (160, 160, 3)


def test_the_expert_opens_the_door_with_the_key_and_the_rooms_follow_in_order():
    for seed in range(10):
        obs, rewards, terminated, has_key = play(seed, k2d.scripted_action)
        phases = [int(o[0]) for o in obs]
        T = len(rewards)
        assert terminated and has_key and rewards[-1] == 1.0 and sum(rewards) == 1.0 and 31 <= T <= 40
        assert phases[:10] == [0] * 10 and phases[10:30] == [1] * 20 and phases[30:] == [2] * (T - 29)
        for o in obs:  # the key is seen only while it lies in room 0, the door only in room 2
            if o[0] != 0:
                assert o[3] == o[4] == -1
            assert (o[5:] >= 0).all() if o[0] == 2 else (o[5:] == -1).all()
            assert (o[1:3] >= 0).all() and (o[1:3] < k2d.SIZE).all()
        picked = next(t for t, o in enumerate(obs) if o[3] < 0)
        assert picked <= 10 and np.array_equal(obs[picked][1:3], obs[picked - 1][3:5])  # stepped onto it


def test_without_the_key_the_door_pays_nothing_and_time_runs_out_at_40():
    """'away': the expert in room 2 only (room 0 spent walking up and down, never onto the key unless it lies in
    the way: seeds where it does are skipped); 'idle': never reaches the door."""
    def away(obs):
        return k2d.scripted_action(obs) if obs[0] == 2 else 0 if obs[2] < 4 else 1

    checked = 0
    for seed in range(10):
        obs, rewards, terminated, has_key = play(seed, away)
        if has_key:  # walked onto the key after all
            continue
        checked += 1
        assert terminated and sum(rewards) == 0.0 and len(rewards) < 40
        assert np.array_equal(obs[-1][1:3], obs[-1][5:7])  # at the door
    assert checked >= 5
    for seed in range(10):  # up, then stay against the top wall: the door is reached only if it is up there
        obs, rewards, terminated, has_key = play(seed, lambda o: 0)
        if obs[-1][6] != k2d.SIZE - 1:
            assert terminated and len(rewards) == 40 and sum(rewards) == 0.0


def test_the_observation_never_says_whether_the_key_is_held():
    """Same seed, one episode picks the key up and one does not: from room 1 on, the same moves give the same
    observations; only the reward at the door differs."""
    def away(obs):
        return 0 if obs[2] < 4 else 1

    for seed in range(20):
        with_key, r1, _, _ = play(seed, lambda o: k2d.scripted_action(o) if o[0] != 1 else 0)
        without, r2, _, has_key = play(seed, lambda o: away(o) if o[0] == 0 else k2d.scripted_action(o) if o[0] == 2
                                       else 0)
        if has_key:
            continue  # this one walked onto the key too
        np.testing.assert_array_equal(np.stack(with_key[10:]), np.stack(without[10:]))
        assert sum(r1) == 1.0 and sum(r2) == 0.0
        return
    pytest.fail("no seed where walking up and down misses the key")


def test_hit_probabilities_by_enumerating_every_walk():
    """All 4^n move sequences from a start, for n <= 4: the fraction that step onto the target."""
    H = k2d.hit_probabilities(4)
    for n in (1, 2, 4):
        Hn = k2d.hit_probabilities(n)
        for start, target in ((0, 1), (12, 6), (24, 18), (3, 3 + 2 * k2d.SIZE)):
            hits = 0
            for moves in itertools.product(range(4), repeat=n):
                cell = np.array(divmod(start, k2d.SIZE))
                for m in moves:
                    cell = np.clip(cell + k2d.MOVES[m], 0, k2d.SIZE - 1)
                    if cell[0] * k2d.SIZE + cell[1] == target:
                        hits += 1
                        break
            assert Hn[start, target] == pytest.approx(hits / 4**n, abs=1e-15)
    assert (H >= 0).all() and (H <= 1).all()


def test_random_success_rate_exact_and_sampled():
    p = k2d.random_success_rate()
    assert p == pytest.approx(0.0441313, abs=1e-7)
    rng = np.random.default_rng(0)
    n = 1000
    wins = sum(sum(play(seed, lambda o: int(rng.integers(4)))[1]) for seed in range(n))
    assert abs(wins / n - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_bad_actions_are_refused():
    env = gym.make(k2d.ENV_ID).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"^action: expected an integer in \[0, 3\], got 4"):
        env.step(4)
