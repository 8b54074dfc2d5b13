"""Checkpoints both ways with transformers, the PyTorch .bin format, atomic writes and broken files; the config."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import require
from minidt import DecisionTransformerConfig, DecisionTransformerModel, parity
from minidt.config import DEFAULTS

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
    ("action_tanh", "yes"),
])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        DecisionTransformerConfig(**{field: value})


def test_n_head_must_divide_hidden_size():
    with pytest.raises(ValueError, match="n_head: expected a divisor of hidden_size 10, got 4"):
        DecisionTransformerConfig(hidden_size=10, n_head=4)
