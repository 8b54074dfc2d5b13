"""minidt: the Decision Transformer from first principles, every forward and backward pass written by hand."""

import importlib
from typing import Any

from .backend import Backend, get_backend, set_backend, to_numpy

__version__ = "0.1.0"
from .config import DecisionTransformerConfig
from .gpt2 import DecisionTransformerGPT2Model
from .layers.module import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .model import DecisionTransformerModel, DecisionTransformerOutput

# Imported on first use (`minidt.optim.AdamW` works after a plain `import minidt`): `data` and `evaluate` bring in
# gymnasium, h5py and minari, which would more than double the time `import minidt` takes; `parallel` brings in
# concurrent.futures and logging.
SUBPACKAGES = ("backend", "checkpoint", "cli", "config", "coursework", "data", "evaluate", "files", "gradcheck",
               "keytodoor", "layers", "losses", "model", "optim", "parallel", "parity", "plots", "policy", "report",
               "runs", "settings", "td3bc", "train")
LAZY_NAMES = {"load_policy": "policy", "Policy": "policy",  # minidt.load_policy(run_dir, target_return)
              "DataParallel": "parallel"}


def __getattr__(name: str) -> Any:
    if name in SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in LAZY_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module 'minidt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SUBPACKAGES) | set(LAZY_NAMES))
