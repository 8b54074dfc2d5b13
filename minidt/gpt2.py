"""DecisionTransformerGPT2Model: GPT-2 as the Decision Transformer uses it (transformers' copy of GPT2Model).

    h = dropout(inputs_embeds + wpe[position_ids])        (inputs_embeds = wte[input_ids] when ids are given)
    h = block_i(h) for each of the n_layer blocks
    last_hidden_state = ln_f(h)

`hidden_states` follows the reference (transformers 5.x): n_layer + 1 entries, the input of every block and
then ln_f's output; the last block's raw output is not among them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .backend import Backend, Generator, array_namespace, device
from .config import DecisionTransformerConfig
from .layers import Block, Dropout, Embedding, LayerNorm, Module, ModuleList, attention_bias
from .validate import check_array, check_shape


@dataclass
class GPT2Output:
    last_hidden_state: Any
    past_key_values: tuple | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None

    def __getitem__(self, i: int) -> Any:  # encoder_outputs[0], as in transformers
        return self.last_hidden_state if i == 0 else (self.past_key_values, self.hidden_states, self.attentions)[i - 1]


class DecisionTransformerGPT2Model(Module):
    """The GPT-2 encoder. Parameters: wte, wpe, h.{i}.*, ln_f (the reference's names)."""

    def __init__(self, config: DecisionTransformerConfig, *, gen: Generator | None = None,
                 backend: "str | Backend | None" = None, dtype: str = "float32"):
        super().__init__(backend, dtype)
        gen = gen or Generator(backend=self.backend)
        self.config = config
        C, std = config.hidden_size, config.initializer_range
        proj_std = std / math.sqrt(2 * config.n_layer)  # GPT-2: residual projections scaled by 1/sqrt(#residuals)
        kw = dict(backend=self.backend, dtype=dtype)
        self.wte = Embedding(config.vocab_size, C, std, gen=gen, **kw)
        self.wpe = Embedding(config.n_positions, C, std, gen=gen, **kw)
        self.drop = Dropout(config.embd_pdrop, gen)
        self.h = ModuleList([
            Block(C, config.n_head, n_inner=config.inner_dim, activation=config.activation_function,
                  layer_norm_epsilon=config.layer_norm_epsilon, attn_pdrop=config.attn_pdrop,
                  resid_pdrop=config.resid_pdrop, scale_attn_weights=config.scale_attn_weights,
                  scale_attn_by_inverse_layer_idx=config.scale_attn_by_inverse_layer_idx, layer_idx=i,
                  reorder_and_upcast_attn=config.reorder_and_upcast_attn, std=std, proj_std=proj_std, gen=gen, **kw)
            for i in range(config.n_layer)
        ])
        self.ln_f = LayerNorm(C, config.layer_norm_epsilon, **kw)

    def forward(self, input_ids: Any = None, past_key_values: tuple | None = None, attention_mask: Any = None,
                position_ids: Any = None, inputs_embeds: Any = None, use_cache: bool | None = None,
                output_attentions: bool = False, output_hidden_states: bool = False) -> GPT2Output:
        """inputs_embeds (B, T, C) or input_ids (B, T); attention_mask (B, T_past + T) of 1/0; position_ids
        (B or 1, T), default T_past .. T_past + T - 1, or one int for every token (the Decision Transformer passes
        0 where the reference passes a zero array: the same numbers, and wpe's gradient is then a plain sum);
        past_key_values: the previous call's, one (k, v) per layer, each (B, H, T_past, D). Returns
        last_hidden_state (B, T, C) and, as asked, the rest."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("input_ids, inputs_embeds: expected exactly one of them, got "
                             + ("both" if input_ids is not None else "neither"))
        use_cache = self.config.use_cache if use_cache is None else use_cache
        self.used_ids = input_ids is not None
        if self.used_ids:
            check_array("input_ids", input_ids, self.backend)
            inputs_embeds = self.wte(input_ids)
        check_array("inputs_embeds", inputs_embeds, self.backend, self.dtype)
        check_shape("inputs_embeds", inputs_embeds, (None, None, self.config.hidden_size))
        xp = array_namespace(inputs_embeds)
        B, T, C = inputs_embeds.shape
        T_past = past_key_values[0][0].shape[2] if past_key_values else 0
        if position_ids is None:
            position_ids = xp.reshape(xp.arange(T_past, T_past + T, device=device(inputs_embeds)), (1, T))
        if attention_mask is not None:
            check_shape("attention_mask", attention_mask, (B, T_past + T))
        if not isinstance(position_ids, int):
            position_ids = xp.broadcast_to(position_ids, (B, T))  # so wpe's backward sees one row per token
        h = self.drop(inputs_embeds + self.wpe(position_ids))  # B,T,C  (an int: wpe gives one row, C)
        # One additive mask for all layers, in the dtype the scores are computed in.
        sdtype = xp.float32 if self.config.reorder_and_upcast_attn else self.dtype
        bias = attention_bias(attention_mask, T, T_past + T, sdtype, h)  # B|1,1,T,T_past+T
        hidden_states, attentions, presents = [], [], []
        for i, block in enumerate(self.h):
            hidden_states.append(h)
            h, probs, present = block(h, bias=bias, past_kv=past_key_values[i] if past_key_values else None,
                                      use_cache=use_cache)
            attentions.append(probs)
            presents.append(present)
        h = self.ln_f(h)
        hidden_states.append(h)
        return GPT2Output(
            last_hidden_state=h,
            past_key_values=tuple(presents) if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    def forward_last(self, inputs_embeds: Any, attention_mask: Any = None, position_ids: Any = None) -> Any:
        """The last token's final hidden state, (B, 1, C): forward(...).last_hidden_state[:, -1:], computing only
        what it needs. Every block but the last runs on all T tokens (their outputs are the next block's keys and
        values); the last block needs every token's key and value but only the last token's query, attention
        row, MLP and ln_f: about a quarter less work for a 3-layer model. For inference: keeps no cache."""
        if self.training:
            raise RuntimeError("forward_last: expected eval mode (call model.eval()), got training mode; it is an "
                               "inference path with no dropout and no backward")
        check_array("inputs_embeds", inputs_embeds, self.backend, self.dtype)
        check_shape("inputs_embeds", inputs_embeds, (None, None, self.config.hidden_size))
        if inputs_embeds.shape[1] == 0:
            raise ValueError(f"inputs_embeds: expected at least one token, got shape {tuple(inputs_embeds.shape)}")
        xp = array_namespace(inputs_embeds)
        B, T, C = inputs_embeds.shape
        if position_ids is None:
            position_ids = xp.reshape(xp.arange(T, device=device(inputs_embeds)), (1, T))
        if attention_mask is not None:
            check_shape("attention_mask", attention_mask, (B, T))
        if not isinstance(position_ids, int):
            position_ids = xp.broadcast_to(position_ids, (B, T))
        h = inputs_embeds + self.wpe(position_ids)  # B,T,C  (dropout: identity in eval)
        sdtype = xp.float32 if self.config.reorder_and_upcast_attn else self.dtype
        bias = attention_bias(attention_mask, T, T, sdtype, h)  # B|1,1,T,T
        *blocks, last = self.h
        for block in blocks:
            h, _, _ = block(h, bias=bias)
        past_kv = last.attn.key_values(last.ln_1(h[:, :-1, :]))  # the keys and values of tokens 0 .. T-2
        h, _, _ = last(h[:, -1:, :], bias=bias[:, :, -1:, :], past_kv=past_kv)  # B,1,C: token T-1 attends to all T
        return self.ln_f(h)

    def backward(self, dout: Any) -> Any:
        """dout: gradient of last_hidden_state (B, T, C). Accumulates every parameter's gradient; returns the
        gradient of inputs_embeds (B, T, C), or None when the forward took input_ids."""
        self.require_forward()
        dh = self.ln_f.backward(dout)
        for block in reversed(list(self.h)):
            dh = block.backward(dh)
        dh = self.drop.backward(dh)
        self.wpe.backward(dh)
        if self.used_ids:
            self.wte.backward(dh)
            return None
        return dh
