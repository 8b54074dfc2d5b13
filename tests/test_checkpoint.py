"""Checkpoints both ways with transformers, the PyTorch .bin format, atomic writes and broken files; the config."""

from __future__ import annotations

import json
import os
import re
import stat
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require
from minidt import DecisionTransformerConfig, DecisionTransformerModel, parity
from minidt.config import ALIASES, DEFAULTS

SMALL = dict(state_dim=3, act_dim=2, hidden_size=8, n_layer=2, n_head=2, max_ep_len=20)


@pytest.fixture
def hf():
    require("torch")
    transformers = require("transformers")
    transformers.logging.set_verbosity_error()
    return transformers


def outputs_agree(ours, ref, torch, config, tol=1e-5):
    x = parity.make_inputs(config, 2, 4)
    t = {k: torch.tensor(v, dtype=torch.long if k == "timesteps" else torch.float32) for k, v in x.items()}
    ours.eval()
    ref.eval()
    with torch.no_grad():
        r = ref(**t)
    o = ours(**x)
    real = x["attention_mask"] > 0
    for k in ("state_preds", "action_preds", "return_preds"):
        np.testing.assert_allclose(np.asarray(getattr(o, k))[real], getattr(r, k).numpy()[real], rtol=tol, atol=tol)


def test_transformers_safetensors_to_minidt(hf, tmp_path):
    import torch

    torch.manual_seed(0)
    ref = hf.DecisionTransformerModel(hf.DecisionTransformerConfig(**SMALL))
    ref.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    ours = DecisionTransformerModel.from_pretrained(tmp_path)
    outputs_agree(ours, ref, torch, ours.config)


def test_transformers_pytorch_bin_to_minidt(hf, tmp_path):
    """The format of the published 2022 checkpoints: pytorch_model.bin + config.json, with GPT-2's legacy
    attn.bias / attn.masked_bias buffers in the state dict."""
    import torch

    torch.manual_seed(1)
    ref = hf.DecisionTransformerModel(hf.DecisionTransformerConfig(**SMALL))
    state = dict(ref.state_dict())
    for i in range(2):
        state[f"encoder.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 8, 8))
        state[f"encoder.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, tmp_path / "pytorch_model.bin")
    ref.config.to_json_file(tmp_path / "config.json")
    ours = DecisionTransformerModel.from_pretrained(tmp_path)
    outputs_agree(ours, ref, torch, ours.config)


def test_minidt_to_transformers(hf, tmp_path):
    import torch

    config = DecisionTransformerConfig(**SMALL, activation_function="gelu_new")
    ours = DecisionTransformerModel(config, seed=0)
    parity.perturb_layernorms(ours)
    ours.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    ref = hf.DecisionTransformerModel.from_pretrained(tmp_path)
    assert ref.config.activation_function == "gelu_new" and ref.config.n_head == 2
    outputs_agree(ours, ref, torch, config)
    again = DecisionTransformerModel.from_pretrained(tmp_path, dtype="float64")
    assert all(np.array_equal(v, again.state_dict()[k]) for k, v in ours.state_dict().items())


def test_pytorch_bin_without_torch_says_what_to_install(tmp_path, monkeypatch):
    torch = require("torch")
    ours = DecisionTransformerModel(DecisionTransformerConfig(**SMALL))
    torch.save({k: torch.from_numpy(v) for k, v in ours.state_dict().items()}, tmp_path / "pytorch_model.bin")
    ours.config.to_json_file(tmp_path / "config.json")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(RuntimeError, match="needs torch"):
        DecisionTransformerModel.from_pretrained(tmp_path)


def test_pickle_is_never_loaded(tmp_path):
    """A .bin holding arbitrary pickled objects is refused by the weights-only loader."""
    torch = require("torch")
    DecisionTransformerModel(DecisionTransformerConfig(**SMALL)).config.to_json_file(tmp_path / "config.json")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="weights-only"):
        DecisionTransformerModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors_raise_clearly(tmp_path, damage):
    DecisionTransformerModel(DecisionTransformerConfig(**SMALL)).save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        DecisionTransformerModel.from_pretrained(tmp_path)


def test_missing_files_raise_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        DecisionTransformerModel.from_pretrained(tmp_path)
    DecisionTransformerConfig(**SMALL).to_json_file(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin"):
        DecisionTransformerModel.from_pretrained(tmp_path)


def test_save_is_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves the previous checkpoint whole and no temporary file behind."""
    model = DecisionTransformerModel(DecisionTransformerConfig(**SMALL), seed=0)
    model.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    import safetensors.numpy

    def crash(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        DecisionTransformerModel(DecisionTransformerConfig(**SMALL), seed=1).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_save_and_load_on_every_backend(tmp_path, backend):
    """A model on a device writes the same file as on NumPy, and loads back onto the device it is asked for."""
    from minidt import to_numpy

    config = DecisionTransformerConfig(**SMALL)
    DecisionTransformerModel(config, seed=0, backend="numpy").save_pretrained(tmp_path / "host")
    DecisionTransformerModel(config, seed=0, backend=backend).save_pretrained(tmp_path / "dev")
    written = {d: (tmp_path / d / "model.safetensors").read_bytes() for d in ("host", "dev")}
    assert written["dev"] == written["host"]
    loaded = DecisionTransformerModel.from_pretrained(tmp_path / "dev", backend=backend)
    assert loaded.backend is backend
    host = DecisionTransformerModel(config, seed=0, backend="numpy")
    for (name, p), q in zip(loaded.named_parameters(), host.parameters()):
        np.testing.assert_array_equal(to_numpy(p.data), q.data, err_msg=name)


# --- config ------------------------------------------------------------------------------------------------------

def test_config_defaults_equal_the_reference_code(hf):
    ref = hf.DecisionTransformerConfig()
    ours = DecisionTransformerConfig()
    for key in DEFAULTS:
        assert getattr(ours, key) == getattr(ref, key), key
    assert ours.activation_function == "relu" and ours.vocab_size == 1  # the code, not the docstring


def test_config_aliases():
    c = DecisionTransformerConfig(num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)
    assert (c.n_layer, c.n_head, c.n_positions) == (2, 4, 64)
    assert (c.num_hidden_layers, c.num_attention_heads, c.max_position_embeddings) == (2, 4, 64)
    c.num_hidden_layers = 5
    assert c.n_layer == 5


def test_config_json_both_ways_and_unknown_keys_survive(hf, tmp_path):
    hf.DecisionTransformerConfig(state_dim=11, act_dim=3, n_layer=2).to_json_file(tmp_path / "hf.json")
    ours = DecisionTransformerConfig.from_json_file(tmp_path / "hf.json")
    assert (ours.state_dim, ours.act_dim, ours.n_layer) == (11, 3, 2)
    ours.to_json_file(tmp_path / "ours.json")
    a, b = json.loads((tmp_path / "hf.json").read_text()), json.loads((tmp_path / "ours.json").read_text())
    assert a == b  # every key, known or not, comes back
    back = hf.DecisionTransformerConfig.from_json_file(tmp_path / "ours.json")
    assert (back.state_dim, back.act_dim, back.n_layer) == (11, 3, 2)
    d = DecisionTransformerConfig.from_dict({"state_dim": 2, "my_note": [1, 2]}).to_dict()
    assert d["my_note"] == [1, 2] and DecisionTransformerConfig.from_dict(d) == DecisionTransformerConfig(**d)


@pytest.mark.parametrize("field, value", [
    ("hidden_size", -8), ("state_dim", 0), ("n_layer", 1.5), ("n_inner", -1), ("activation_function", "swishy"),
    ("attn_pdrop", 1.0), ("resid_pdrop", -0.1), ("layer_norm_epsilon", 0.0), ("initializer_range", -1.0),
    ("action_tanh", "yes"), ("act_dim", True), ("max_ep_len", 0), ("n_positions", -1), ("vocab_size", None),
    ("n_head", "2"), ("n_inner", 0), ("activation_function", ["relu"]), ("activation_function", {"a": 1}),
    ("resid_pdrop", float("nan")), ("embd_pdrop", float("inf")), ("attn_pdrop", True), ("attn_pdrop", "0.1"),
    ("layer_norm_epsilon", float("nan")), ("layer_norm_epsilon", float("inf")), ("layer_norm_epsilon", True),
    ("initializer_range", float("nan")), ("initializer_range", float("inf")), ("initializer_range", False),
    ("use_cache", 1), ("reorder_and_upcast_attn", None), ("hidden_size", 10**3 + 0.5),
])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}: expected") as e:
        DecisionTransformerConfig(**{field: value})
    assert "\n" not in str(e.value)
    config = DecisionTransformerConfig()
    with pytest.raises(ValueError, match=f"^{field}: expected"):  # set later: checked the same
        setattr(config, field, value)


def test_numpy_scalars_become_python_numbers():
    c = DecisionTransformerConfig(hidden_size=np.int64(16), n_head=np.int32(2), resid_pdrop=np.float32(0.25))
    assert type(c.hidden_size) is int and type(c.n_head) is int and type(c.resid_pdrop) is float
    assert json.loads(c.to_json_string())["resid_pdrop"] == 0.25


def test_unknown_keys_behave_as_in_transformers(hf, tmp_path):
    """Kept as attributes, written back by to_dict and save_pretrained, readable by both libraries."""
    extras = dict(extra=5, my_note=[1, 2], nested={"a": {"b": None}}, architectures=["DecisionTransformerModel"])
    ref = hf.DecisionTransformerConfig(**SMALL, **extras)
    ours = DecisionTransformerConfig(**SMALL, **extras)
    for key, value in extras.items():
        assert getattr(ours, key) == getattr(ref, key) == value
        assert ours.to_dict()[key] == ref.to_dict()[key] == value
    DecisionTransformerModel(ours).save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert all(written[k] == v for k, v in extras.items())
    back = hf.DecisionTransformerConfig.from_pretrained(tmp_path)
    assert back.extra == 5 and back.nested == {"a": {"b": None}}
    assert DecisionTransformerModel.from_pretrained(tmp_path).config.my_note == [1, 2]


def test_unknown_keys_that_cannot_be_fields_or_json():
    with pytest.raises(ValueError, match="^to_dict: a method or property of DecisionTransformerConfig, not a field"):
        DecisionTransformerConfig(to_dict=5)
    with pytest.raises(ValueError, match="^inner_dim: a method or property"):
        DecisionTransformerConfig(inner_dim=5)
    c = DecisionTransformerConfig(blob=object())
    assert isinstance(c.to_dict()["blob"], object)  # kept, as transformers keeps it
    with pytest.raises(ValueError, match="^blob: expected a value JSON can hold, got object"):
        c.to_json_string()
    with pytest.raises(ValueError, match="^model_type: expected 'decision_transformer', got 'gpt2'"):
        DecisionTransformerConfig(model_type="gpt2")
    with pytest.raises(ValueError, match="^config: expected a dict of field names to values, got list"):
        DecisionTransformerConfig.from_dict([("state_dim", 3)])


FIELD_VALUES = st.one_of(
    st.integers(-3, 40), st.integers(-2**70, 2**70), st.floats(), st.floats(0, 1), st.booleans(), st.none(),
    st.text(max_size=6), st.sampled_from(["relu", "gelu", "gelu_new", "tanh", "silu", "swish"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.complex_numbers(), st.builds(np.int64, st.integers(-5, 40)), st.builds(np.float32, st.floats(0, 1, width=32)),
    st.just(np.bool_(True)), st.just(object()),
)
SMALL_FIELDS = ("state_dim", "act_dim", "hidden_size", "n_layer", "n_head", "n_inner", "max_ep_len", "n_positions",
                "vocab_size")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(DEFAULTS) + ["num_attention_heads", "unknown_key"]), FIELD_VALUES,
                       max_size=3))
def test_fuzz_config_fields(fields):
    """Any values for up to three fields: a ValueError or TypeError naming one of them (n_head for a hidden size
    it does not divide), or a config that round-trips through JSON and, when small, builds a model that runs."""
    try:
        config = DecisionTransformerConfig(**fields)
    except Exception as e:  # noqa: BLE001  (what escapes is the point of the test)
        named = str(e).partition(":")[0]
        assert isinstance(e, (ValueError, TypeError)), f"{type(e).__name__} escaped: {e}"
        assert named in {ALIASES.get(k, k) for k in fields} | {"n_head"} and "\n" not in str(e), str(e)
        return
    try:
        text = config.to_json_string()
    except ValueError as e:  # only an unknown key can hold what JSON cannot
        assert str(e).startswith("unknown_key: expected a value JSON can hold"), str(e)
        return
    assert DecisionTransformerConfig.from_dict(json.loads(text)).to_json_string() == text
    if all(getattr(config, k) is None or getattr(config, k) <= 40 for k in SMALL_FIELDS):
        model = DecisionTransformerModel(config, seed=0).eval()
        x = parity.make_inputs(config, 2, 3)
        assert np.isfinite(model.get_action(**x)).all() or not config.action_tanh  # relu may grow, tanh bounds


# --- damaged files -----------------------------------------------------------------------------------------------

def saved(tmp_path, fmt="safetensors", state=None):
    """A checkpoint directory: config.json plus the weights (the model's own unless `state` is given)."""
    torch = require("torch")
    model = DecisionTransformerModel(DecisionTransformerConfig(**SMALL), seed=0)
    model.save_pretrained(tmp_path)
    if fmt == "bin":
        (tmp_path / "model.safetensors").unlink()
        default = {k: torch.from_numpy(v) for k, v in model.state_dict().items()}
        torch.save(default if state is None else state(default), tmp_path / "pytorch_model.bin")
    elif state is not None:
        import safetensors.torch

        default = {k: torch.from_numpy(v) for k, v in model.state_dict().items()}
        safetensors.torch.save_file(state(default), tmp_path / "model.safetensors", metadata={"format": "pt"})
    return tmp_path, model


def poisoned(value):
    def damage(state):
        state["encoder.h.1.mlp.c_fc.weight"][1, 2] = value
        return state
    return damage


def directory_at(name):
    def damage(path):
        (path / name).unlink()
        (path / name).mkdir()
    return damage


def write_at(name, data):
    def damage(path):
        (path / name).write_bytes(data)
    return damage


def nested(depth):
    return ("[" * depth + "]" * depth).encode()


DAMAGED = [  # (what, format, state change, file change, the file named, what the message says)
    ("nested state_dict", "bin", lambda s: {"state_dict": s, "epoch": 3}, None, "pytorch_model.bin",
     "holds a nested dict under 'state_dict' .*save model.state_dict\\(\\) itself"),
    ("a non-tensor value", "bin", lambda s: {**s, "step": 7}, None, "pytorch_model.bin",
     "entry 'step' is a int; expected a tensor"),
    ("a string value", "bin", lambda s: {**s, "note": "hello"}, None, "pytorch_model.bin",
     "entry 'note' is a str; expected a tensor"),
    ("a sparse tensor", "bin", lambda s: {**s, "encoder.wpe.weight": s["encoder.wpe.weight"].to_sparse()}, None,
     "pytorch_model.bin", "tensor 'encoder.wpe.weight': expected a dense tensor, got layout torch.sparse_coo"),
    ("a list, not a dict", "bin", lambda s: list(s.values()), None, "pytorch_model.bin",
     "expected a state dict .*, got list"),
    ("NaN in a .bin", "bin", poisoned(float("nan")), None, "pytorch_model.bin",
     r"tensor 'encoder.h.1.mlp.c_fc.weight': expected finite numbers, got nan at index \(1, 2\)"),
    ("inf in safetensors", "safetensors", poisoned(float("inf")), None, "model.safetensors",
     r"tensor 'encoder.h.1.mlp.c_fc.weight': expected finite numbers, got inf at index \(1, 2\)"),
    ("-inf in safetensors", "safetensors", poisoned(float("-inf")), None, "model.safetensors",
     "expected finite numbers, got -inf"),
    ("a float8 tensor", "safetensors", lambda s: {**s, "encoder.wpe.weight": s["encoder.wpe.weight"].to(
        __import__("torch").float8_e4m3fn)}, None, "model.safetensors",
     "tensor 'encoder.wpe.weight' has dtype F8_E4M3"),
    ("model.safetensors is a directory", "safetensors", None, directory_at("model.safetensors"), "model.safetensors",
     "is a directory; expected a file"),
    ("pytorch_model.bin is a directory", "bin", None, directory_at("pytorch_model.bin"), "pytorch_model.bin",
     "is a directory; expected a file"),
    ("config.json is a directory", "safetensors", None, directory_at("config.json"), "config.json",
     "is a directory; expected a JSON file"),
    ("config.json not UTF-8", "safetensors", None, write_at("config.json", b'{"state_dim": "\xff\xfe"}'),
     "config.json", "is not UTF-8 text"),
    ("config.json nested absurdly", "safetensors", None, write_at("config.json", nested(100_000)), "config.json",
     "is nested too deeply to be a config"),
    ("config.json a list", "safetensors", None, write_at("config.json", b"[1, 2]"), "config.json",
     "expected a JSON object, got list"),
    ("config.json not JSON", "safetensors", None, write_at("config.json", b"{state_dim: 3"), "config.json",
     "is not valid JSON"),
    ("config.json with NaN", "safetensors", None, write_at("config.json", b'{"resid_pdrop": NaN}'), "config.json",
     "resid_pdrop: expected a finite number, got nan"),
    ("config.json empty", "safetensors", None, write_at("config.json", b""), "config.json", "is not valid JSON"),
    ("truncated safetensors", "safetensors", None, lambda p: (p / "model.safetensors").write_bytes(
        (p / "model.safetensors").read_bytes()[:100]), "model.safetensors", "is corrupt or truncated"),
    ("truncated .bin", "bin", None, lambda p: (p / "pytorch_model.bin").write_bytes(
        (p / "pytorch_model.bin").read_bytes()[:100]), "pytorch_model.bin", "is corrupt, truncated or not a weights"),
]


@pytest.mark.parametrize("what, fmt, state, damage, file, says", DAMAGED, ids=[d[0] for d in DAMAGED])
def test_damaged_checkpoints_are_one_clear_error_naming_the_file(tmp_path, what, fmt, state, damage, file, says):
    path, _ = saved(tmp_path, fmt, state)
    if damage is not None:
        damage(path)
    with pytest.raises(ValueError, match=f"^(checkpoint|config): {re.escape(str(path / file))}:? .*{says}") as e:
        DecisionTransformerModel.from_pretrained(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("half", ["bfloat16", "float16"])
def test_half_precision_checkpoints_load_in_the_models_dtype(tmp_path, fmt, half):
    torch = require("torch")
    path, model = saved(tmp_path, fmt, lambda s: {k: v.to(getattr(torch, half)) for k, v in s.items()})
    for dtype in ("float32", "float64"):
        loaded = DecisionTransformerModel.from_pretrained(path, dtype=dtype)
        for name, value in model.state_dict().items():
            got = loaded.state_dict()[name]
            assert got.dtype == np.dtype(dtype)
            expected = torch.from_numpy(value).to(getattr(torch, half)).to(torch.float64).numpy()
            np.testing.assert_array_equal(got, expected.astype(dtype))  # exactly the half values, widened


def test_files_are_written_with_the_users_umask(tmp_path):
    """Not 0600 (tempfile.mkstemp's mode): a run directory can be shared."""
    from minidt.checkpoint import save_safetensors
    from minidt.files import atomic_write, atomic_write_text

    model = DecisionTransformerModel(DecisionTransformerConfig(**SMALL), seed=0)
    for umask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(umask)
        try:
            out = tmp_path / oct(umask)
            model.save_pretrained(out)
            atomic_write_text(out / "note.txt", "hi")
            atomic_write(out / "raw.bin", lambda tmp: open(tmp, "wb").write(b"x"))
            save_safetensors({"a": np.ones(2)}, out / "a.safetensors")
            model.config.to_json_file(out / "c.json")
        finally:
            os.umask(old)
        for f in out.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == mode, (f.name, oct(f.stat().st_mode), oct(umask))
        assert sorted(f.name for f in out.iterdir()) == ["a.safetensors", "c.json", "config.json",
                                                         "model.safetensors", "note.txt", "raw.bin"]


def test_n_head_must_divide_hidden_size():
    with pytest.raises(ValueError, match="n_head: expected a divisor of hidden_size 10, got 4"):
        DecisionTransformerConfig(hidden_size=10, n_head=4)
