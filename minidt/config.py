"""DecisionTransformerConfig: the reference's fields, defaults and aliases, as a plain dataclass-like object.

Defaults equal transformers' *code* (5.x), which disagrees with its docstring in two places: activation_function
is "relu" (the docstring says "gelu") and vocab_size is 1 (the docstring says 50257). We follow the code, since
that is what `DecisionTransformerConfig()` gives a user of the reference. Keys we do not know (for example
transformers' "architectures" or "transformers_version") are kept and written back, so a config.json survives a
round trip through minidt unchanged.
"""

from __future__ import annotations

import json
import os
from typing import Any

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

ALIASES = {"max_position_embeddings": "n_positions", "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}

MODEL_TYPE = "decision_transformer"


class DecisionTransformerConfig:
    """Hyperparameters of a Decision Transformer. `DecisionTransformerConfig(state_dim=11, act_dim=3)`; the
    aliases max_position_embeddings, num_attention_heads and num_hidden_layers read and write n_positions, n_head
    and n_layer. Invalid values raise ValueError naming the field."""

    model_type = MODEL_TYPE

    def __init__(self, **kwargs: Any):
        for key, value in DEFAULTS.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "extra", {})
        for key, value in kwargs.items():
            setattr(self, key, value)
        self.validate()

    def __setattr__(self, key: str, value: Any) -> None:
        key = ALIASES.get(key, key)
        if key in DEFAULTS or key == "extra":
            object.__setattr__(self, key, value)
        elif key == "model_type":
            if value != MODEL_TYPE:
                raise ValueError(f"model_type: expected {MODEL_TYPE!r}, got {value!r}")
        else:
            self.extra[key] = value  # unknown keys survive a round trip

    def __getattr__(self, key: str) -> Any:  # only called when normal lookup fails
        if key in ALIASES:
            return getattr(self, ALIASES[key])
        extra = self.__dict__.get("extra", {})
        if key in extra:
            return extra[key]
        raise AttributeError(f"DecisionTransformerConfig has no field {key!r}")

    def validate(self) -> None:
        def positive_int(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")

        for name in ("state_dim", "act_dim", "hidden_size", "max_ep_len", "vocab_size", "n_positions", "n_layer",
                     "n_head"):
            positive_int(name)
        if self.n_inner is not None:
            positive_int("n_inner")
        if self.hidden_size % self.n_head != 0:
            raise ValueError(f"n_head: expected a divisor of hidden_size {self.hidden_size}, got {self.n_head}")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"activation_function: expected one of {', '.join(ACTIVATIONS)}, "
                             f"got {self.activation_function!r}")
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                raise ValueError(f"{name}: expected a dropout probability in [0, 1), got {v!r}")
        if not isinstance(self.layer_norm_epsilon, (int, float)) or not self.layer_norm_epsilon > 0:
            raise ValueError(f"layer_norm_epsilon: expected a positive number, got {self.layer_norm_epsilon!r}")
        if not isinstance(self.initializer_range, (int, float)) or self.initializer_range < 0:
            raise ValueError(f"initializer_range: expected a number >= 0, got {self.initializer_range!r}")
        for name in ("action_tanh", "scale_attn_weights", "use_cache", "scale_attn_by_inverse_layer_idx",
                     "reorder_and_upcast_attn"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected true or false, got {getattr(self, name)!r}")

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.hidden_size

    # --- serialization ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {key: getattr(self, key) for key in DEFAULTS}
        d.update(self.extra)
        d["model_type"] = MODEL_TYPE
        return dict(sorted(d.items()))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DecisionTransformerConfig":
        return cls(**d)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_json_file(self, path: "str | os.PathLike") -> None:
        """Write atomically: a crash leaves the old file or the new one, never half of one."""
        from .checkpoint import atomic_write_text

        atomic_write_text(path, self.to_json_string())

    @classmethod
    def from_json_file(cls, path: "str | os.PathLike") -> "DecisionTransformerConfig":
        try:
            with open(path) as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"config: {path} is not valid JSON ({e})") from e
        if not isinstance(d, dict):
            raise ValueError(f"config: expected a JSON object in {path}, got {type(d).__name__}")
        return cls.from_dict(d)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DecisionTransformerConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in DEFAULTS)
        return f"DecisionTransformerConfig({fields})"
