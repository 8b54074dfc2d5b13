"""Checkpoints in transformers' on-disk format, both ways.

- `save_pretrained(model, dir)`: config.json + model.safetensors (metadata format "pt", which transformers'
  loader requires). Every file is written to a temporary name and renamed: a crash never leaves half a file.
- `from_pretrained(cls, dir)`: model.safetensors, or pytorch_model.bin (the published 2022 Decision Transformer
  checkpoints) through `torch.load(weights_only=True)`: no pickle is ever loaded any other way.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .backend import to_numpy
from .config import DecisionTransformerConfig

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
TORCH_NAME = "pytorch_model.bin"
LEGACY_BUFFERS = (".attn.bias", ".attn.masked_bias")  # GPT-2's old causal-mask buffers: not parameters


def atomic_write(path: "str | os.PathLike", write: Callable[[str], None]) -> None:
    """Call write(tmp_path) on a temporary file next to `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: "str | os.PathLike", text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def save_safetensors(tensors: dict[str, np.ndarray], path: "str | os.PathLike") -> None:
    from safetensors.numpy import save_file

    contiguous = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(contiguous, tmp, metadata={"format": "pt"}))


def load_safetensors(path: "str | os.PathLike") -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a bad header or a short file
        raise ValueError(f"checkpoint: {path} is corrupt or truncated ({type(e).__name__}: {e})") from e


def load_torch_bin(path: "str | os.PathLike") -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise RuntimeError(f"checkpoint: {path} is a PyTorch file and reading it needs torch "
                           "(pip install torch); model.safetensors needs no torch") from e
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint: {path} is corrupt, truncated or not a weights-only PyTorch file "
                         f"({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint: expected a state dict in {path}, got {type(state).__name__}")
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def load_into(model: Any, state: dict[str, Any], strict: bool = True) -> None:
    """Copy `state` (name -> array) into the model's parameters, checking names and shapes."""
    params = dict(model.named_parameters())
    state = {k: v for k, v in state.items() if not k.endswith(LEGACY_BUFFERS)}
    unexpected = sorted(set(state) - set(params))
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
        host = np.asarray(to_numpy(value))
        p = params[name]
        if tuple(host.shape) != p.shape:
            raise ValueError(f"state_dict[{name!r}]: expected shape {p.shape}, got {tuple(host.shape)}")
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
