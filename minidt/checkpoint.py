"""Checkpoints in transformers' on-disk format, both ways.

- `save_pretrained(model, dir)`: config.json + model.safetensors (metadata format "pt", which transformers'
  loader requires). Every file is written atomically (`minidt.files`): a crash never leaves half a file.
- `from_pretrained(cls, dir)`: model.safetensors, or pytorch_model.bin (the published 2022 Decision Transformer
  checkpoints) through `torch.load(weights_only=True)`: no pickle is ever loaded any other way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import validate
from .backend import dtype_name, to_numpy
from .config import DecisionTransformerConfig
from .files import atomic_write, atomic_write_text

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
TORCH_NAME = "pytorch_model.bin"
LEGACY_BUFFERS = (".attn.bias", ".attn.masked_bias")  # GPT-2's old causal-mask buffers: not parameters


def save_safetensors(tensors: dict[str, np.ndarray], path: "str | os.PathLike") -> None:
    from safetensors.numpy import save_file

    contiguous = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(contiguous, tmp, metadata={"format": "pt"}))


SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                      "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}  # and BF16, by hand


def load_safetensors(path: "str | os.PathLike") -> dict[str, np.ndarray]:
    """A safetensors file -> {name: NumPy array}, bfloat16 tensors as float32 (NumPy has no bfloat16, and
    transformers checkpoints are often saved that way). Checked as `checked_state` checks."""
    from safetensors import deserialize

    path = _file(path)
    try:
        tensors = deserialize(path.read_bytes())
    except Exception as e:  # safetensors raises its own error types for a bad header or a short file
        raise ValueError(f"checkpoint: {path} is corrupt or truncated ({validate.said(e)})") from e
    state = {}
    for name, view in tensors:
        raw = view["data"]
        if view["dtype"] == "BF16":  # a bfloat16 is the top half of a float32
            state[name] = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(view["shape"])
        elif view["dtype"] in SAFETENSORS_DTYPES:
            state[name] = np.frombuffer(raw, SAFETENSORS_DTYPES[view["dtype"]]).reshape(view["shape"])
        else:
            raise ValueError(f"checkpoint: {path}: tensor {name!r} has dtype {view['dtype']}; expected one of BF16, "
                             f"{', '.join(SAFETENSORS_DTYPES)}")
    return checked_state(path, state)


def load_torch_bin(path: "str | os.PathLike") -> dict[str, np.ndarray]:
    """A pytorch_model.bin (a flat {name: tensor} dict) through torch.load(weights_only=True), the only way a
    pickle is ever read here. Checked as `checked_state` checks; bfloat16 tensors come back as float32."""
    try:
        import torch
    except ImportError as e:
        raise RuntimeError(f"checkpoint: {path} is a PyTorch file and reading it needs torch "
                           "(pip install torch); model.safetensors needs no torch") from e
    path = _file(path)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint: {path} is corrupt, truncated or not a weights-only PyTorch file "
                         f"({validate.said(e)})") from e
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint: {path}: expected a state dict (names to tensors), got {type(state).__name__}")
    for name, value in state.items():
        if isinstance(value, dict):
            raise ValueError(f"checkpoint: {path} holds a nested dict under {name!r} (a training checkpoint?); "
                             "expected a flat state dict of tensors: save model.state_dict() itself")
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"checkpoint: {path}: entry {name!r} is a {type(value).__name__}; expected a tensor")
    return checked_state(path, {k: validate.host_array(f"checkpoint: {path}: tensor {k!r}", v)
                                for k, v in state.items()})


def checked_state(path: "str | os.PathLike", state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Refuse names that are not strings and floating-point tensors holding NaN or inf, naming the file and the
    tensor."""
    for name, value in state.items():
        if not isinstance(name, str):
            raise ValueError(f"checkpoint: {path}: tensor name {name!r} is a {type(name).__name__}; expected a string")
        validate.finite(f"checkpoint: {path}: tensor {name!r}", value)
    return state


def _file(path: "str | os.PathLike") -> Path:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint: {path} is a directory; expected a file")
    return path


def load_into(model: Any, state: dict[str, Any], strict: bool = True) -> None:
    """Copy `state` (name -> array) into the model's parameters, checking names, shapes and values (real, finite
    in the model's dtype); float16, bfloat16 and float64 tensors are converted to the model's dtype."""
    if not isinstance(state, Mapping):
        raise ValueError(f"state_dict: expected a mapping of parameter names to arrays (as state_dict() returns), "
                         f"got {type(state).__name__}")
    params = dict(model.named_parameters())
    state = {k: v for k, v in state.items() if not (isinstance(k, str) and k.endswith(LEGACY_BUFFERS))}
    unexpected = sorted(map(str, set(state) - set(params)))
    missing = sorted(set(params) - set(state))
    if strict and (unexpected or missing):
        raise ValueError("state_dict: names do not match the model: "
                         + (f"missing {missing}" if missing else "")
                         + ("; " if missing and unexpected else "")
                         + (f"unexpected {unexpected}" if unexpected else "")
                         + " (load_state_dict(..., strict=False) loads a subset)")
    for name, value in state.items():
        if name not in params:
            continue
        p = params[name]
        host = validate.host_array(f"state_dict[{name!r}]", value)
        if tuple(host.shape) != p.shape:
            raise ValueError(f"state_dict[{name!r}]: expected shape {p.shape}, got {tuple(host.shape)}")
        host = validate.finite(f"state_dict[{name!r}]", host, dtype_name(p.data.dtype))
        p.data = model.backend.asarray(host, dtype=p.data.dtype)


def save_pretrained(model: Any, directory: "str | os.PathLike") -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.setdefault("architectures", ["DecisionTransformerModel"])
    config["dtype"] = str(np.dtype(to_numpy(model.embed_ln.weight.data).dtype))
    save_safetensors(model.state_dict(), directory / SAFETENSORS_NAME)
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2) + "\n")


def read_state(directory: "str | os.PathLike") -> dict[str, np.ndarray]:
    """The weights of a checkpoint directory: model.safetensors if present, else pytorch_model.bin."""
    directory = Path(directory)
    if (directory / SAFETENSORS_NAME).exists():
        return load_safetensors(directory / SAFETENSORS_NAME)
    if (directory / TORCH_NAME).exists():
        return load_torch_bin(directory / TORCH_NAME)
    raise FileNotFoundError(f"checkpoint: expected {SAFETENSORS_NAME} or {TORCH_NAME} in {directory}, found "
                            f"{sorted(p.name for p in directory.iterdir()) if directory.is_dir() else 'no directory'}")


def from_pretrained(cls: type, directory: "str | os.PathLike", dtype: str = "float32", backend: Any = None) -> Any:
    directory = Path(directory)
    if not (directory / CONFIG_NAME).exists():
        raise FileNotFoundError(f"checkpoint: expected {CONFIG_NAME} in {directory} (a directory written by "
                                "save_pretrained); model ids of the Hugging Face hub cannot be downloaded here")
    config = DecisionTransformerConfig.from_json_file(directory / CONFIG_NAME)
    model = cls(config, dtype=dtype, backend=backend)
    model.load_state_dict(read_state(directory), strict=True)
    return model
