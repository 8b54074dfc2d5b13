"""DecisionTransformerModel: returns-to-go, states and actions interleaved into one GPT-2 sequence.

    tokens per timestep t:   (R_t, s_t, a_t)   each = its own Linear embedding + embed_timestep[t]
    sequence:                R_1 s_1 a_1 R_2 s_2 a_2 ...  (B, 3T, C), then embed_ln
    encoder:                 GPT-2, causal, position ids all zero (the timestep embedding is the position)
    action_preds[t]  read at the token s_t   (the action is predicted from the state, before a_t is seen)
    state_preds[t], return_preds[t]  read at the token a_t

Discrete actions (config.discrete_actions): an action enters as a one-hot vector of act_dim entries, so
embed_action, a Linear on it, picks one column of its weight plus the bias: an embedding table (the original
Atari code's nn.Embedding). Integer ids become one-hots on the host (the sampler, the rollout), never on the
device. action_preds are then logits (no tanh); the loss is cross-entropy (losses.py).

Same names, shapes and semantics as transformers' DecisionTransformerModel, plus `backward`: there is no autograd,
so the gradient of whichever predictions the loss used is handed back explicitly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from . import validate
from .backend import DTYPES, Backend, Generator, dtype_name, to_numpy
from .config import DecisionTransformerConfig
from .gpt2 import DecisionTransformerGPT2Model
from .layers import Activation, Embedding, LayerNorm, Linear, Module, ModuleList
from .layers.module import no_grad


@dataclass
class DecisionTransformerOutput:
    """The reference's output fields. Arrays are of the model's backend."""

    state_preds: Any = None  # B,T,state_dim
    action_preds: Any = None  # B,T,act_dim
    return_preds: Any = None  # B,T,1
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    last_hidden_state: Any = None  # B,3T,C

    def to_tuple(self) -> tuple:
        return (self.state_preds, self.action_preds, self.return_preds)

    def __getitem__(self, i: int) -> Any:
        return self.to_tuple()[i]


class DecisionTransformerModel(Module):
    """`DecisionTransformerModel(config, dtype="float32", backend=None, seed=None)`; keyword fields build a config:
    `DecisionTransformerModel(state_dim=3, act_dim=1)`. Initialized as the reference does: every weight N(0,
    initializer_range^2) (the residual projections c_proj divided by sqrt(2 n_layer)), biases zero, LayerNorms
    one and zero."""

    def __init__(self, config: DecisionTransformerConfig | None = None, dtype: str = "float32",
                 backend: "str | Backend | None" = None, seed: int | None = None, **fields: Any):
        if dtype_name(dtype) not in DTYPES:
            raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
        super().__init__(backend, dtype)
        if config is None:
            config = DecisionTransformerConfig(**fields)
        elif not isinstance(config, DecisionTransformerConfig):
            raise ValueError(f"config: expected a DecisionTransformerConfig, got {type(config).__name__} (build one "
                             "with DecisionTransformerConfig(**fields), or pass the fields: "
                             "DecisionTransformerModel(state_dim=3, act_dim=1))")
        elif fields:
            raise ValueError(f"config: pass either a config or config fields, got both ({', '.join(fields)})")
        config.validate()  # fields may have been changed since the config was made
        self.config = config
        self.gen = Generator(seed, self.backend)
        C, std = config.hidden_size, config.initializer_range
        kw = dict(gen=self.gen, backend=self.backend, dtype=dtype)
        self.encoder = DecisionTransformerGPT2Model(config, **kw)
        self.embed_timestep = Embedding(config.max_ep_len, C, std, **kw)
        self.embed_return = Linear(1, C, std, **kw)
        self.embed_state = Linear(config.state_dim, C, std, **kw)
        self.embed_action = Linear(config.act_dim, C, std, **kw)
        self.embed_ln = LayerNorm(C, 1e-5, backend=self.backend, dtype=dtype)  # eps 1e-5 always, as the reference
        self.predict_state = Linear(C, config.state_dim, std, **kw)
        self.predict_action = ModuleList([Linear(C, config.act_dim, std, **kw)]
                                         + ([Activation("tanh")] if config.action_tanh else []))
        self.predict_return = Linear(C, 1, std, **kw)

    # --- forward ---------------------------------------------------------------------------------------------
    def forward(self, states: Any = None, actions: Any = None, rewards: Any = None, returns_to_go: Any = None,
                timesteps: Any = None, attention_mask: Any = None, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None
                ) -> "DecisionTransformerOutput | tuple":
        """states (B, T, state_dim), actions (B, T, act_dim) (one-hot rows for a discrete model), rewards (unused,
        as in the reference),
        returns_to_go (B, T, 1), timesteps (B, T) integers in [0, max_ep_len), attention_mask (B, T) of 1 (real)
        and 0 (padding), default all ones; B, T >= 1. NumPy arrays, lists, torch tensors or arrays of the model's
        backend; floats are cast to the model's dtype. Bad input raises ValueError naming the argument: a wrong
        shape or dtype, and for host input (anything but an array already on the model's GPU) NaN or inf (also a
        value the cast overflows), a mask value other than 0 and 1, a timestep out of range, checked on the host
        before the input is moved. Values of arrays already on the device are not read (that would stall the
        GPU): checking them is the caller's part."""
        x, mask3 = self._tokens(states, actions, returns_to_go, timesteps, attention_mask)  # B,3T,C and B,3T
        cfg, xp = self.config, self.backend.xp
        B, T, C = x.shape[0], x.shape[1] // 3, cfg.hidden_size
        # position ids all 0, as the reference's zero array: the timestep embedding plays the role of a position
        enc = self.encoder(inputs_embeds=x, attention_mask=mask3, position_ids=0, use_cache=False,
                           output_attentions=bool(output_attentions), output_hidden_states=bool(output_hidden_states))
        h = xp.reshape(enc.last_hidden_state, (B, T, 3, C))  # h[:, t, k]: token k of timestep t (R, s, a)
        h_state, h_action = h[:, :, 1, :], h[:, :, 2, :]
        return_preds = self.predict_return(h_action)  # B,T,1  next return, given state and action
        state_preds = self.predict_state(h_action)  # B,T,state_dim  next state, given state and action
        action_preds = h_state
        for m in self.predict_action:  # Linear, then tanh if action_tanh
            action_preds = m(action_preds)  # B,T,act_dim  the action, given the state
        self.shape = (B, T)
        if return_dict is False:
            return state_preds, action_preds, return_preds
        return DecisionTransformerOutput(state_preds, action_preds, return_preds, enc.hidden_states,
                                         enc.attentions, enc.last_hidden_state)

    def get_action(self, states: Any = None, actions: Any = None, rewards: Any = None, returns_to_go: Any = None,
                   timesteps: Any = None, attention_mask: Any = None) -> Any:
        """The action to take now: forward(...).action_preds[:, -1] (B, act_dim), read at the last state token
        (a discrete model's: logits; the caller picks, by argmax or by sampling),
        computing only what it needs. Inputs as in forward, batched, already cut to the last K steps and padded
        (unlike the transformers example's `get_action(model, ...)`, which takes one episode's whole history and
        does that itself: `minidt.evaluate.context` does it here). The last action token comes after that state
        token, so it is dropped; the encoder computes the last block for that one token only (`forward_last`).
        Eval mode only (no dropout); it runs under `no_grad()`: a rollout step keeps nothing for backward."""
        if self.training:
            raise RuntimeError("get_action: expected eval mode (call model.eval()), got training mode; it is the "
                               "inference path of a rollout step, with no dropout")
        with no_grad():
            x, mask3 = self._tokens(states, actions, returns_to_go, timesteps, attention_mask)  # B,3T,C and B,3T
            x, mask3 = x[:, :-1, :], mask3[:, :-1]  # ... R_T s_T: s_T cannot see a_T (a placeholder input)
            h = self.encoder.forward_last(x, mask3, 0)  # B,1,C  at the token s_T (position ids all 0)
            for m in self.predict_action:  # Linear, then tanh if action_tanh
                h = m(h)
            return h[:, 0, :]  # B,act_dim

    def _tokens(self, states: Any, actions: Any, returns_to_go: Any, timesteps: Any, attention_mask: Any
                ) -> tuple[Any, Any]:
        """Checked inputs -> the token sequence after embed_ln, x (B, 3T, C), and its mask (B, 3T)."""
        cfg, xp = self.config, self.backend.xp
        b, dtype = self.backend, self.dtype
        states = validate.model_input("states", states, (None, None, cfg.state_dim), b, dtype, self._finite)
        B, T = states.shape[0], states.shape[1]
        if B == 0 or T == 0:
            raise ValueError(f"states: expected at least one timestep and one sequence (B, T >= 1), got shape "
                             f"{tuple(states.shape)}")
        if cfg.discrete_actions and getattr(actions, "ndim", None) == 2:
            raise ValueError(f"actions: expected one-hot rows of shape ({B}, {T}, {cfg.act_dim}) (a discrete model), "
                             f"got shape {tuple(actions.shape)}; action ids become one-hots as "
                             f"np.eye({cfg.act_dim})[ids]")
        actions = validate.model_input("actions", actions, (B, T, cfg.act_dim), b, dtype,
                                       validate.one_hot if cfg.discrete_actions else self._finite)
        returns_to_go = validate.model_input("returns_to_go", returns_to_go, (B, T, 1), b, dtype, self._finite)
        timesteps = validate.model_input("timesteps", timesteps, (B, T), b, "int64", self._timestep_values)
        if attention_mask is not None:
            attention_mask = validate.model_input("attention_mask", attention_mask, (B, T), b, dtype, validate.binary)
        else:
            attention_mask = xp.ones((B, T), dtype=dtype, device=b.device)

        time = self.embed_timestep(timesteps)  # B,T,C  the timestep plays the role of a position
        r = self.embed_return(returns_to_go) + time  # B,T,C
        s = self.embed_state(states) + time
        a = self.embed_action(actions) + time
        C = cfg.hidden_size
        x = xp.reshape(xp.stack((r, s, a), axis=2), (B, 3 * T, C))  # B,3T,C  R_1 s_1 a_1 R_2 ...
        x = self.embed_ln(x)
        mask3 = xp.reshape(xp.stack((attention_mask,) * 3, axis=2), (B, 3 * T))  # B,3T
        return x, mask3

    # --- backward --------------------------------------------------------------------------------------------
    def backward(self, state_preds: Any = None, action_preds: Any = None, return_preds: Any = None) -> None:
        """Upstream gradients dL/d(prediction) for any subset of the three predictions (NumPy or backend
        arrays, each the shape of its prediction). Adds dL/dparameter into every parameter's `.grad`."""
        if state_preds is None and action_preds is None and return_preds is None:
            raise ValueError("DecisionTransformerModel.backward: expected the gradient of at least one of "
                             "state_preds, action_preds, return_preds, got none")
        self.require_forward()
        cfg, xp = self.config, self.backend.xp
        B, T = self.shape
        C = cfg.hidden_size
        shapes = {"return_preds": (B, T, 1), "state_preds": (B, T, cfg.state_dim), "action_preds": (B, T, cfg.act_dim)}
        given = (("return_preds", return_preds), ("state_preds", state_preds), ("action_preds", action_preds))
        d_return, d_state, d_action = (
            None if d is None else validate.model_input(name, d, shapes[name], self.backend, self.dtype)
            for name, d in given)
        zeros = xp.zeros((B, T, C), dtype=self.dtype, device=self.backend.device)
        dh_action, dh_state = zeros, zeros
        if d_return is not None:
            dh_action = dh_action + self.predict_return.backward(d_return)
        if d_state is not None:
            dh_action = dh_action + self.predict_state.backward(d_state)
        if d_action is not None:
            for m in reversed(list(self.predict_action)):
                d_action = m.backward(d_action)
            dh_state = d_action
        dh = xp.reshape(xp.stack((zeros, dh_state, dh_action), axis=2), (B, 3 * T, C))  # B,3T,C
        dx = self.embed_ln.backward(self.encoder.backward(dh))  # B,3T,C
        dx = xp.reshape(dx, (B, T, 3, C))
        dr, ds, da = dx[:, :, 0, :], dx[:, :, 1, :], dx[:, :, 2, :]
        self.embed_return.backward(dr)
        self.embed_state.backward(ds)
        self.embed_action.backward(da)
        self.embed_timestep.backward(dr + ds + da)  # the timestep embedding was added to all three tokens

    # --- inputs: checked by validate.model_input, once each; these say which values are acceptable ---------
    def _finite(self, name: str, host: Any) -> Any:
        """No NaN or inf, also none made by the cast to the model's dtype (a float64 1e39 in a float32 model)."""
        return validate.finite(name, host, dtype_name(self.dtype))

    def _timestep_values(self, name: str, host: Any) -> Any:
        """Integers in [0, max_ep_len): rows of embed_timestep."""
        return validate.indices(name, host, self.config.max_ep_len, "max_ep_len")

    # --- state dicts, devices, checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """{reference name: NumPy array}, in the reference's layouts (Conv1D (in, out), Linear (out, in))."""
        return {name: to_numpy(p.data).copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> "DecisionTransformerModel":
        """Copy weights in (NumPy arrays, torch tensors, or backend arrays). `strict=False` loads a subset.
        Legacy GPT-2 buffers (attn.bias, attn.masked_bias) are ignored."""
        from .checkpoint import load_into

        load_into(self, state, strict)
        return self

    def extra_repr(self) -> str:
        c = self.config
        return (f"state_dim={c.state_dim}, act_dim={c.act_dim}, hidden_size={c.hidden_size}, n_layer={c.n_layer}, "
                f"parameters={self.num_parameters():,}, dtype={dtype_name(self.dtype)}, device={self.device!r}")

    def save_pretrained(self, save_directory: "str | os.PathLike") -> None:
        """Write config.json and model.safetensors, as transformers' save_pretrained does (it loads them)."""
        from .checkpoint import save_pretrained

        save_pretrained(self, save_directory)

    @classmethod
    def from_pretrained(cls, directory: "str | os.PathLike", dtype: str = "float32",
                        backend: "str | Backend | None" = None) -> "DecisionTransformerModel":
        """Load a directory written by transformers' or minidt's save_pretrained: config.json plus
        model.safetensors, or pytorch_model.bin (read with torch.load(weights_only=True); needs torch)."""
        from .checkpoint import from_pretrained

        return from_pretrained(cls, directory, dtype, backend)

