"""minidt: the Decision Transformer from first principles, every forward and backward pass written by hand."""

from .backend import Backend, get_backend, set_backend, to_numpy

__version__ = "0.1.0"
from .config import DecisionTransformerConfig
from .gpt2 import DecisionTransformerGPT2Model
from .model import DecisionTransformerModel, DecisionTransformerOutput
