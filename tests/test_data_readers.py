"""Readers for data the user brings (D4RL hdf5 files, Minari datasets) and load_dataset's errors."""

from __future__ import annotations

import json
import re
import sys

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from minidt.data import load_dataset, read_d4rl, read_minari


@pytest.fixture(autouse=True)
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def write_d4rl(path, N=9, terminals=(2,), timeouts=(6,), drop=()):
    """Rows r = 0..N-1 with observation (r, -r), action r / 10, reward r."""
    r = np.arange(N)
    data = dict(observations=np.stack([r, -r], 1).astype(np.float32), actions=(r / 10).astype(np.float32)[:, None],
                rewards=r.astype(np.float32), terminals=np.isin(r, terminals), timeouts=np.isin(r, timeouts))
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if k not in drop:
                f.create_dataset(k, data=v)
    return path


def test_d4rl_episode_splits(tmp_path):
    # rows 0-2 end in a terminal, rows 3-6 in a timeout, rows 7-8 are unfinished when the data ends
    d = load_dataset(write_d4rl(tmp_path / "hopper-medium-v2.hdf5"))
    np.testing.assert_array_equal(d.lengths, [3, 4, 2])
    e0, e1, e2 = d
    np.testing.assert_array_equal(e0.observations, [[0, 0], [1, -1], [2, -2]])
    np.testing.assert_allclose(e1.actions[:, 0], [0.3, 0.4, 0.5, 0.6], rtol=1e-6)
    np.testing.assert_array_equal(e2.rewards, [7, 8])
    np.testing.assert_array_equal(e0.terminations, [0, 0, 1])
    assert not e0.truncations.any()
    np.testing.assert_array_equal(e1.truncations, [0, 0, 0, 1])
    assert not e1.terminations.any()
    np.testing.assert_array_equal(e2.truncations, [0, 1])  # cut by the end of the data
    assert not e2.terminations.any()
    np.testing.assert_array_equal(d.returns, [3, 18, 15])
    assert d.env_id == "hopper" and d.scale == 1000.0 and d.metadata["source"] == "d4rl"
    assert d.name == "hopper-medium-v2"


def test_d4rl_edge_cases(tmp_path):
    # a terminal and a timeout on the same row end one episode; the last row ending one leaves no stub behind
    d = read_d4rl(write_d4rl(tmp_path / "x.hdf5", N=6, terminals=(1, 5), timeouts=(1, 3)), env="walker2d")
    np.testing.assert_array_equal(d.lengths, [2, 2, 2])
    assert d.env_id == "walker2d" and d[2].terminations[-1] and not d[2].truncations.any()
    # no end marked at all: one truncated episode
    d = read_d4rl(write_d4rl(tmp_path / "y.hdf5", N=4, terminals=(), timeouts=()))
    np.testing.assert_array_equal(d.lengths, [4])
    assert d[0].truncations[-1] and d.env_id is None


def test_d4rl_bad_files(tmp_path):
    with pytest.raises(ValueError, match=r"missing key\(s\) timeouts; expected observations, actions"):
        read_d4rl(write_d4rl(tmp_path / "old.hdf5", drop=("timeouts",)))
    (tmp_path / "text.hdf5").write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable hdf5 file"):
        read_d4rl(tmp_path / "text.hdf5")
    with pytest.raises(ValueError, match="no such file"):
        load_dataset(tmp_path / "missing.hdf5")


def user_minari_dataset(dataset_id: str) -> list[EpisodeBuffer]:
    """A dataset as a user would bring it: written by minari itself, without any environment."""
    rng = np.random.default_rng(0)
    buffers = []
    for T in (3, 5):
        buffers.append(EpisodeBuffer(observations=rng.normal(size=(T + 1, 4)).astype(np.float32),
                                     actions=rng.uniform(-1, 1, size=(T, 2)).astype(np.float32),
                                     rewards=rng.normal(size=T), terminations=np.arange(T) == T - 1,
                                     truncations=np.zeros(T, bool)))
    minari.create_dataset_from_buffers(
        dataset_id, buffers, observation_space=gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
        action_space=gym.spaces.Box(-1, 1, (2,), np.float32), algorithm_name="test", author="test",
        author_email="test", code_permalink="test", description="test")
    return buffers


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_minari_by_id_and_by_path(tmp_path):
    buffers = user_minari_dataset("tests/point/mixed-v0")
    by_id = load_dataset("tests/point/mixed-v0")
    by_dir = load_dataset(tmp_path / "minari" / "tests/point/mixed-v0")
    by_data_dir = read_minari(tmp_path / "minari" / "tests/point/mixed-v0" / "data", env="pendulum")
    for d in (by_id, by_dir, by_data_dir):
        np.testing.assert_array_equal(d.lengths, [3, 5])
        for e, b in zip(d, buffers, strict=True):
            np.testing.assert_array_equal(e.observations, b.observations[:-1])  # Minari's final one dropped
            np.testing.assert_array_equal(e.actions, b.actions)
            np.testing.assert_allclose(e.rewards, b.rewards)
            np.testing.assert_array_equal(e.terminations, b.terminations)
    assert by_id.env_id is None and by_id.metadata["dataset_id"] == by_id.name == "tests/point/mixed-v0"
    assert by_data_dir.env_id == "pendulum" and by_data_dir.scale == 1000.0


def discrete_minari_dataset(dataset_id: str, n: int = 3, observation_space=None) -> list[EpisodeBuffer]:
    """A user's dataset with Discrete(n) actions: integer ids, shape (T,)."""
    rng = np.random.default_rng(1)
    buffers = [EpisodeBuffer(observations=rng.normal(size=(T + 1, 2)).astype(np.float32),
                             actions=rng.integers(0, n, size=T), rewards=rng.normal(size=T),
                             terminations=np.arange(T) == T - 1, truncations=np.zeros(T, bool)) for T in (4, 2)]
    minari.create_dataset_from_buffers(
        dataset_id, buffers, observation_space=observation_space or gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
        action_space=gym.spaces.Discrete(n), algorithm_name="test", author="test", author_email="test",
        code_permalink="test", description="test")
    return buffers


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_minari_discrete_actions_become_one_hot_rows():
    buffers = discrete_minari_dataset("tests/grid/discrete-v0", n=3)
    d = load_dataset("tests/grid/discrete-v0")
    assert d.discrete_actions and d.act_dim == 3
    for e, b in zip(d, buffers, strict=True):
        np.testing.assert_array_equal(e.actions, np.eye(3)[b.actions])
    with pytest.raises(ValueError, match="observation space Discrete; minidt reads Box .* observations only"):
        read_minari_with_observations(gym.spaces.Discrete(4))


def read_minari_with_observations(space):
    """A Minari dataset whose observations are not a Box."""
    rng = np.random.default_rng(2)
    minari.create_dataset_from_buffers(
        "tests/grid/obs-v0", [EpisodeBuffer(observations=rng.integers(0, 4, size=3), actions=rng.integers(0, 2, size=2),
                                            rewards=np.ones(2), terminations=np.array([False, True]),
                                            truncations=np.zeros(2, bool))],
        observation_space=space, action_space=gym.spaces.Discrete(2), algorithm_name="test", author="test",
        author_email="test", code_permalink="test", description="test")
    return load_dataset("tests/grid/obs-v0")


def test_d4rl_integer_actions_are_discrete(tmp_path):
    path = write_d4rl(tmp_path / "grid.hdf5")
    with h5py.File(path, "a") as f:
        del f["actions"]
        f.create_dataset("actions", data=np.array([0, 2, 1, 0, 0, 2, 1, 1, 0]))
    d = read_d4rl(path)
    assert d.discrete_actions and d.act_dim == 3  # the largest id + 1
    np.testing.assert_array_equal(d[0].actions, np.eye(3)[[0, 2, 1]])
    assert load_dataset(path, n_actions=5).act_dim == 5  # the environment's number of actions: ids 3, 4 unused
    with pytest.raises(ValueError, match=r"^D4RL file '.*grid.hdf5': actions: expected action ids in \[0, 1\] "
                                         r"\(2 actions\), got ids in \[0, 2\]"):
        load_dataset(path, n_actions=2)
    with h5py.File(path, "a") as f:
        del f["actions"]
        f.create_dataset("actions", data=np.zeros((9, 2), np.int64))
    with pytest.raises(ValueError, match=r"actions: expected integer action ids of shape \(T,\) or \(T, 1\), got "
                                         r"int64 \(9, 2\)"):
        read_d4rl(path)


def test_load_generated_tier():
    d = load_dataset("random", env="Pendulum-v1", episodes=2, progress=False)
    assert len(d) == 2 and d.state_dim == 3 and d.act_dim == 1 and d.env_id == "Pendulum-v1"
    # generated datasets are found by id too: minidt's cache is searched after Minari's directory
    assert np.array_equal(load_dataset("minidt/pendulum/random-seed0-n2-v0")[1].actions, d[1].actions)


@pytest.mark.parametrize("spec,env,message", [
    ("expert", None, "dataset 'expert' is a generated tier: pass env= one of pendulum, mountaincar"),
    ("expert", "lunarlander", "env 'lunarlander': no generated datasets for it; expected one of pendulum"),
    ("meduim", "pendulum", "dataset 'meduim': expected a tier (random, medium, expert, medium-replay"),
    ("nothing/here-v0", None, "Minari dataset 'nothing/here-v0': not found locally (looked in"),
    ("missing.hdf5", None, "D4RL file 'missing.hdf5': no such file"),
])
def test_bad_input_is_a_one_line_value_error(spec, env, message):
    with pytest.raises(ValueError) as e:
        load_dataset(spec, env=env)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_not_a_minari_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no metadata.json"):
        load_dataset(tmp_path / "empty")


# --- damaged files: each one line naming the file (and the key) --------------------------------------------------

def replace(f, key, value):
    del f[key]
    f[key] = value


def planted(key, index, value):
    def damage(f):
        x = f[key][()].astype(np.float64)
        x[index] = value
        replace(f, key, x)
    return damage


D4RL_DAMAGE = [  # (what, change to the open hdf5 file, what the message says after the file name)
    ("NaN observation", planted("observations", (4, 1), np.nan),
     r"observations: expected finite numbers, got nan at index \(4, 1\)"),
    ("inf action", planted("actions", (2, 0), np.inf), r"actions: expected finite numbers, got inf at index \(2, 0\)"),
    ("-inf reward", planted("rewards", 7, -np.inf), r"rewards: expected finite numbers, got -inf at index \(7,\)"),
    ("NaN reward", planted("rewards", 0, np.nan), "rewards: expected finite numbers, got nan"),
    ("observation beyond float32", planted("observations", (3, 0), 1e39),
     "observations: expected finite numbers within float32's range"),
    ("observations a group", lambda f: (f.__delitem__("observations"), f.create_group("observations")),
     "observations is a Group; expected an array"),
    ("rewards a scalar", lambda f: replace(f, "rewards", 1.0), "rewards is a scalar; expected one entry per step"),
    ("rewards strings", lambda f: replace(f, "rewards", np.array([b"a"] * 9)),
     "rewards: expected real numbers .* got dtype"),
    ("rewards two per row", lambda f: replace(f, "rewards", np.ones((9, 2))), "episode: expected T entries"),
    ("fewer actions", lambda f: replace(f, "actions", np.ones((8, 1))),
     "expected the same non-zero number of rows in every key"),
]


@pytest.mark.parametrize("what, damage, says", D4RL_DAMAGE, ids=[d[0] for d in D4RL_DAMAGE])
def test_damaged_d4rl_files_are_one_line_naming_the_file_and_key(tmp_path, what, damage, says):
    path = write_d4rl(tmp_path / "hopper-medium-v2.hdf5")
    with h5py.File(path, "a") as f:
        damage(f)
    with pytest.raises(ValueError, match=f"^D4RL file '{re.escape(str(path))}': {says}") as e:
        load_dataset(path)
    assert "\n" not in str(e.value)


def test_d4rl_path_that_is_not_a_whole_file(tmp_path):
    (tmp_path / "dir.hdf5").mkdir()
    with pytest.raises(ValueError, match="D4RL file .*dir.hdf5': a directory; expected an hdf5 file"):
        load_dataset(tmp_path / "dir.hdf5")
    path = write_d4rl(tmp_path / "cut.hdf5", N=2000)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(ValueError, match="D4RL file .*cut.hdf5': not a readable hdf5 file") as e:
        load_dataset(path)
    assert "\n" not in str(e.value)


def edit_metadata(change):
    def damage(data):
        meta = json.loads((data / "metadata.json").read_text())
        (data / "metadata.json").write_text(json.dumps(change(meta)))
    return damage


def in_hdf5(change):
    def damage(data):
        with h5py.File(data / "main_data.hdf5", "a") as f:
            change(f)
    return damage


def cut(data):
    p = data / "main_data.hdf5"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


MINARI_DAMAGE = [  # (what, change to the data/ folder, the file named, what the message says after it)
    ("metadata {}", edit_metadata(lambda m: {}), "metadata.json", "missing 'dataset_id'"),
    ("metadata a list", edit_metadata(lambda m: [m]), "metadata.json", "expected a JSON object, got list"),
    ("no dataset_id", edit_metadata(lambda m: {k: v for k, v in m.items() if k != "dataset_id"}), "metadata.json",
     "missing 'dataset_id'"),
    ("total_episodes a string", edit_metadata(lambda m: {**m, "total_episodes": "2"}), "metadata.json",
     "total_episodes is '2'; expected an integer"),
    ("total_episodes above the count", edit_metadata(lambda m: {**m, "total_episodes": 5}), "main_data.hdf5",
     r"episode_2 is missing \(metadata.json says total_episodes 5, the file holds 2 episodes\)"),
    ("data_format arrow without pyarrow", edit_metadata(lambda m: {**m, "data_format": "arrow"}), "metadata.json",
     r"data_format 'arrow' needs pyarrow, which is not installed: pip install 'minari\[arrow\]'"),
    ("data_format unknown", edit_metadata(lambda m: {**m, "data_format": "csv"}), "metadata.json",
     "data_format 'csv'; expected 'hdf5' or 'arrow'"),
    ("metadata not JSON", lambda d: (d / "metadata.json").write_text("{oops"), "metadata.json",
     "not a JSON file .*JSONDecodeError"),
    ("metadata not UTF-8", lambda d: (d / "metadata.json").write_bytes(b"\xff\xfe{}"), "metadata.json",
     "not a JSON file .*UnicodeDecodeError"),
    ("an episode group missing", in_hdf5(lambda f: f.__delitem__("episode_1")), "main_data.hdf5",
     "episode_1 is missing"),
    ("rewards missing", in_hdf5(lambda f: f.__delitem__("episode_0/rewards")), "main_data.hdf5",
     "episode_0/rewards is missing"),
    ("rewards a scalar", in_hdf5(lambda f: replace(f, "episode_1/rewards", 1.0)), "main_data.hdf5",
     "episode_1/rewards is a scalar"),
    ("observations a group", in_hdf5(lambda f: (f.__delitem__("episode_0/observations"),
                                                f.create_group("episode_0/observations"))), "main_data.hdf5",
     "episode_0/observations is a Group; expected an array"),
    ("truncated main_data.hdf5", cut, "main_data.hdf5", "not a readable hdf5 file, truncated or damaged"),
    ("main_data.hdf5 missing", lambda d: (d / "main_data.hdf5").unlink(), "",
     "main_data.hdf5 is missing or not a file"),
    ("NaN observation", in_hdf5(planted("episode_1/observations", (2, 3), np.nan)), "main_data.hdf5",
     r"episode_1: observations: expected finite numbers, got nan at index \(2, 3\)"),
    ("inf action", in_hdf5(planted("episode_0/actions", (0, 1), np.inf)), "main_data.hdf5",
     r"episode_0: actions: expected finite numbers, got inf at index \(0, 1\)"),
    ("NaN reward", in_hdf5(planted("episode_1/rewards", 4, np.nan)), "main_data.hdf5",
     r"episode_1: rewards: expected finite numbers, got nan at index \(4,\)"),
    ("rewards strings", in_hdf5(lambda f: replace(f, "episode_0/rewards", np.array([b"a"] * 3))), "main_data.hdf5",
     "episode_0: rewards: expected real numbers"),
    ("too few actions", in_hdf5(lambda f: replace(f, "episode_0/actions", np.zeros((1, 2), np.float32))),
     "main_data.hdf5", "episode_0: episode: expected T entries in every field"),
]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("what, damage, file, says", MINARI_DAMAGE, ids=[d[0] for d in MINARI_DAMAGE])
def test_damaged_minari_datasets_are_one_line_naming_the_file(tmp_path, monkeypatch, what, damage, file, says):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError, installed or not
    user_minari_dataset("tests/point/damaged-v0")
    data = tmp_path / "minari" / "tests/point/damaged-v0" / "data"
    damage(data)
    with pytest.raises(ValueError) as e:
        load_dataset("tests/point/damaged-v0")
    message = str(e.value)
    assert "\n" not in message
    assert re.match(f"^Minari dataset (file )?'{re.escape(str(data / file) if file else str(data))}': {says}",
                    message), message
