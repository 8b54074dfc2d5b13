"""DecisionTransformerConfig: the reference's fields, defaults and aliases, as a plain dataclass-like object.

Defaults equal transformers' *code* (5.x), which disagrees with its docstring in two places: activation_function
is "relu" (the docstring says "gelu") and vocab_size is 1 (the docstring says 50257). We follow the code, since
that is what `DecisionTransformerConfig()` gives a user of the reference. Keys we do not know (for example
transformers' "architectures" or "transformers_version") are kept as attributes and written back, as transformers
does, so a config.json survives a round trip through minidt unchanged.

One field is minidt's own: `discrete_actions` (default False). True marks a discrete action space: act_dim is then
the number of actions, actions enter as one-hot vectors and action_preds are logits (action_tanh False, its
default then). transformers keeps the key as an unknown one, so its DecisionTransformerModel loads such a
checkpoint and computes the same logits. The key is written only when set, so a continuous config.json is
exactly transformers' own.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Any

from .files import atomic_write_text
from .layers.activations import ACTIVATIONS

DEFAULTS: dict[str, Any] = {
    "state_dim": 17,
    "act_dim": 4,
    "hidden_size": 128,
    "max_ep_len": 4096,
    "action_tanh": True,
    "vocab_size": 1,
    "n_positions": 1024,
    "n_layer": 3,
    "n_head": 1,
    "n_inner": None,  # None means 4 * hidden_size
    "activation_function": "relu",
    "resid_pdrop": 0.1,
    "embd_pdrop": 0.1,
    "attn_pdrop": 0.1,
    "layer_norm_epsilon": 1e-5,
    "initializer_range": 0.02,
    "scale_attn_weights": True,
    "use_cache": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
}

# minidt's own fields, beyond the reference's: absent from a config.json unless set (see the module docstring)
MINIDT_DEFAULTS: dict[str, Any] = {"discrete_actions": False}

ALIASES = {"max_position_embeddings": "n_positions", "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}

MODEL_TYPE = "decision_transformer"

POSITIVE_INTS = ("state_dim", "act_dim", "hidden_size", "max_ep_len", "vocab_size", "n_positions", "n_layer",
                 "n_head")
PROBABILITIES = ("resid_pdrop", "embd_pdrop", "attn_pdrop")
FLAGS = ("action_tanh", "scale_attn_weights", "use_cache", "scale_attn_by_inverse_layer_idx",
         "reorder_and_upcast_attn", "discrete_actions")


def check_field(key: str, value: Any) -> Any:
    """A known field's value, checked (ValueError naming the field) and normalized: NumPy integers and floats
    become Python ones, so that the config writes to JSON."""
    if key in POSITIVE_INTS or (key == "n_inner" and value is not None):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            raise ValueError(f"{key}: expected a positive integer, got {value!r}")
        return int(value)
    if key == "activation_function":
        if not isinstance(value, str) or value not in ACTIVATIONS:
            raise ValueError(f"{key}: expected one of {', '.join(ACTIVATIONS)}, got {value!r}")
        return value
    if key in FLAGS:
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
        return value
    if key in PROBABILITIES + ("layer_norm_epsilon", "initializer_range"):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{key}: expected a finite number, got {value!r}")
        if key in PROBABILITIES and not 0.0 <= value < 1.0:
            raise ValueError(f"{key}: expected a dropout probability in [0, 1), got {value!r}")
        if key == "layer_norm_epsilon" and not value > 0:
            raise ValueError(f"{key}: expected a positive number, got {value!r}")
        if key == "initializer_range" and value < 0:
            raise ValueError(f"{key}: expected a number >= 0, got {value!r}")
        return float(value)
    return value


class DecisionTransformerConfig:
    """Hyperparameters of a Decision Transformer. `DecisionTransformerConfig(state_dim=11, act_dim=3)`; the
    aliases max_position_embeddings, num_attention_heads and num_hidden_layers read and write n_positions, n_head
    and n_layer. Invalid values raise ValueError naming the field, when set. Unknown keys are kept as attributes
    and written back by to_dict, as in transformers."""

    model_type = MODEL_TYPE

    def __init__(self, **kwargs: Any):
        for key, value in DEFAULTS.items():
            object.__setattr__(self, key, value)
        if kwargs.get("discrete_actions") is True and "action_tanh" not in kwargs:
            object.__setattr__(self, "action_tanh", False)  # a discrete model's default: logits, not tanh
        for key, value in kwargs.items():
            setattr(self, key, value)
        self.validate()

    def __setattr__(self, key: str, value: Any) -> None:
        key = ALIASES.get(key, key)
        if key == "model_type":
            if value != MODEL_TYPE:
                raise ValueError(f"model_type: expected {MODEL_TYPE!r}, got {value!r}")
            return
        if key not in DEFAULTS and hasattr(type(self), key):
            raise ValueError(f"{key}: a method or property of DecisionTransformerConfig, not a field")
        object.__setattr__(self, key, check_field(key, value))

    def __getattr__(self, key: str) -> Any:  # only called when normal lookup fails
        if key in ALIASES:
            return getattr(self, ALIASES[key])
        if key in MINIDT_DEFAULTS:
            return MINIDT_DEFAULTS[key]
        raise AttributeError(f"DecisionTransformerConfig has no field {key!r}")

    def validate(self) -> None:
        """What no single field can check: n_head divides hidden_size; a discrete model has no tanh."""
        if self.hidden_size % self.n_head != 0:
            raise ValueError(f"n_head: expected a divisor of hidden_size {self.hidden_size}, got {self.n_head}")
        if self.discrete_actions and self.action_tanh:
            raise ValueError("action_tanh: expected false with discrete_actions true (action_preds are logits), "
                             "got true")

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.hidden_size

    # --- serialization ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every field, known or not, and model_type, sorted by name."""
        return dict(sorted({**vars(self), "model_type": MODEL_TYPE}.items()))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DecisionTransformerConfig":
        if not isinstance(d, dict) or not all(isinstance(k, str) for k in d):
            raise ValueError(f"config: expected a dict of field names to values, got {type(d).__name__}"
                             + (" with keys that are not strings" if isinstance(d, dict) else ""))
        return cls(**d)

    def to_json_string(self) -> str:
        d = self.to_dict()
        for key, value in d.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError) as e:  # an unknown key set to something JSON cannot hold
                raise ValueError(f"{key}: expected a value JSON can hold, got {type(value).__name__} ({e})") from None
        return json.dumps(d, indent=2) + "\n"

    def to_json_file(self, path: "str | os.PathLike") -> None:
        """Write atomically: a crash leaves the old file or the new one, never half of one."""
        atomic_write_text(path, self.to_json_string())

    @classmethod
    def from_json_file(cls, path: "str | os.PathLike") -> "DecisionTransformerConfig":
        """Read a config.json; a file that is not one (not UTF-8, not JSON, not an object, nested too deeply,
        a directory) raises ValueError naming it."""
        try:
            d = json.loads(Path(path).read_bytes().decode("utf-8"))
        except IsADirectoryError:
            raise ValueError(f"config: {path} is a directory; expected a JSON file") from None
        except FileNotFoundError:
            raise
        except OSError as e:
            raise ValueError(f"config: cannot read {path} ({e.strerror})") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"config: {path} is not UTF-8 text ({e})") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"config: {path} is not valid JSON ({e})") from None
        except RecursionError:
            raise ValueError(f"config: {path} is nested too deeply to be a config") from None
        if not isinstance(d, dict):
            raise ValueError(f"config: {path}: expected a JSON object, got {type(d).__name__}")
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"config: {path}: {e}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DecisionTransformerConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"DecisionTransformerConfig({fields})"
