"""The layers of a GPT-2 block, each a forward/backward function pair plus a thin Module."""

from .activations import ACTIVATIONS, Activation, get_activation
from .attention import CausalSelfAttention, attention_bias, softmax_backward, softmax_forward
from .block import Block
from .dropout import Dropout
from .embedding import Embedding
from .layernorm import LayerNorm
from .linear import Conv1D, Linear
from .mlp import MLP
from .module import Module, ModuleList, Parameter
