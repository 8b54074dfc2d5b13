"""Assignment 5: the Decision Transformer's embedding layer: (return, state, action) tokens, the timestep embedding,
the interleaving into one sequence, and the backward that undoes it.

embedding_forward / embedding_backward are minidt's own (minidt/layers/embedding.py). The embedding and
interleaving of DecisionTransformerModel.forward (and the split and scatter-add of its backward) are written here
as a pure pair; tests/test_coursework.py checks them against the model.
"""

from __future__ import annotations

from typing import Any

from ..backend import array_namespace
from ..layers.embedding import embedding_backward, embedding_forward
from ..layers.linear import linear_backward, linear_forward
from .checks import Case, Draw, Question
from .pair import Pair
from .spec import Assignment, Function

__all__ = ["embedding_forward", "embedding_backward", "dt_embed_forward", "dt_embed_backward", "visible_tokens",
           "PARAM_NAMES", "ASSIGNMENT"]

PARAM_NAMES = ("embed_timestep.weight", "embed_return.weight", "embed_return.bias", "embed_state.weight",
               "embed_state.bias", "embed_action.weight", "embed_action.bias")


def dt_embed_forward(returns_to_go: Any, states: Any, actions: Any, timesteps: Any,
                     params: dict[str, Any]) -> tuple[Any, tuple]:
    """returns_to_go (B, T, 1), states (B, T, S), actions (B, T, A), timesteps (B, T) integers ->
    x (B, 3T, C) in the order R_1 s_1 a_1 R_2 s_2 a_2 ..., cache."""
    xp = array_namespace(states)
    B, T = timesteps.shape
    time, time_cache = embedding_forward(timesteps, params["embed_timestep.weight"])  # B,T,C
    r, r_cache = linear_forward(returns_to_go, params["embed_return.weight"], params["embed_return.bias"])
    s, s_cache = linear_forward(states, params["embed_state.weight"], params["embed_state.bias"])
    a, a_cache = linear_forward(actions, params["embed_action.weight"], params["embed_action.bias"])
    C = time.shape[-1]
    # the timestep embedding plays the role of a position: it is added to all three tokens of its timestep
    x = xp.reshape(xp.stack((r + time, s + time, a + time), axis=2), (B, 3 * T, C))  # B,3T,C
    return x, (time_cache, r_cache, s_cache, a_cache)


def dt_embed_backward(dx: Any, cache: tuple) -> dict[str, Any]:
    """dx (B, 3T, C) -> {name: gradient} for the seven embedding parameters."""
    xp = array_namespace(dx)
    time_cache, r_cache, s_cache, a_cache = cache
    B, T3, C = dx.shape
    dx = xp.reshape(dx, (B, T3 // 3, 3, C))  # dx[:, t, k]: token k (R, s, a) of timestep t
    dr, ds, da = dx[:, :, 0, :], dx[:, :, 1, :], dx[:, :, 2, :]  # B,T,C each
    grads: dict[str, Any] = {}
    _, grads["embed_return.weight"], grads["embed_return.bias"] = linear_backward(dr, r_cache)
    _, grads["embed_state.weight"], grads["embed_state.bias"] = linear_backward(ds, s_cache)
    _, grads["embed_action.weight"], grads["embed_action.bias"] = linear_backward(da, a_cache)
    # the timestep embedding was added to all three tokens: its gradient is the sum of theirs, scatter-added
    # into the rows that were looked up (a timestep seen twice gets both gradients)
    grads["embed_timestep.weight"] = embedding_backward(dr + ds + da, time_cache)
    return grads


def visible_tokens(k: Any) -> Any:
    """k (...) positions in a segment, 0-based -> how many tokens the state token s_k attends to, itself included."""
    return 3 * k + 2  # R_0 s_0 a_0 ... R_k s_k: positions 0 .. 3k + 1


INTRO = """
The Decision Transformer reads a trajectory as a sequence of tokens, three per timestep t:

    R_t  = embed_return(returns_to_go[t]) + embed_timestep[t]          Linear 1 -> C
    s_t  = embed_state(states[t])         + embed_timestep[t]          Linear S -> C
    a_t  = embed_action(actions[t])       + embed_timestep[t]          Linear A -> C
    x    = R_1 s_1 a_1 R_2 s_2 a_2 ...                                 (B, 3T, C): stack on a new axis 2, reshape

embed_timestep is a lookup table (max_ep_len, C): the timestep plays the role of the position (GPT-2's own
position ids are all zero in the Decision Transformer). The embeddings are torch.nn.Linear: weight (out, in).

The backward undoes the interleaving (tutorials/02 and 06 derive it). Prompts:
- which entries of dx belong to R_t, s_t and a_t? The forward's stack and reshape, run backwards, tell;
- each token's gradient goes through its own Linear's backward (assignment 1);
- embed_timestep[t] was added to all three tokens of timestep t: what does its row receive?
- an embedding is a lookup, out[i] = weight[ids[i]]: row v of dweight collects the gradient of every output that
  looked it up, including two lookups of the same row (plain fancy-index assignment keeps only one of them:
  minidt.backend.scatter_add adds, on every backend). Rows never looked up get zero.

(In the full model, embed_ln then normalizes x; that is assignment 2's layer and not part of this one.)
"""

PREAMBLE = """
from typing import Any

from minidt.backend import array_namespace, device, scatter_add  # scatter_add(out, idx, src): out[idx[i]] += src[i]
from minidt.layers.linear import linear_backward, linear_forward  # assignment 1
"""

FUNCTIONS = (
    Function("embedding_forward", """
        ids (...) integers in [0, V), weight (V, C) -> (out (..., C), cache): out[...] = weight[ids[...]].

        Flatten ids to (N,) and use xp.take(weight, flat, axis=0). cache = (flat, weight.shape): the flat ids
        and the shape of weight (a tuple).
        """),
    Function("embedding_backward", """
        dout (..., C), cache from embedding_forward -> dweight (V, C).

        Start from zeros (V, C) (device=device(dout)); which rows receive which rows of dout (reshaped to (N, C))?
        Repeated ids must add up: scatter_add(out, idx, src) does out[idx[i]] += src[i] for every i.
        """),
    Function("dt_embed_forward", """
        returns_to_go (B, T, 1), states (B, T, S), actions (B, T, A), timesteps (B, T) integers in [0, V),
        params {name: array} -> (x (B, 3T, C), cache).

        params: embed_timestep.weight (V, C); embed_return.weight (C, 1), embed_return.bias (C,);
        embed_state.weight (C, S), embed_state.bias (C,); embed_action.weight (C, A), embed_action.bias (C,).
        x[:, 3t] = R_t, x[:, 3t + 1] = s_t, x[:, 3t + 2] = a_t, each its Linear embedding + embed_timestep[t].
        cache = (time_cache, r_cache, s_cache, a_cache): the caches of embedding_forward (the timesteps) and of
        linear_forward for the return, the state and the action.
        """),
    Function("dt_embed_backward", """
        dx (B, 3T, C), cache from dt_embed_forward -> grads {name: gradient} for the seven parameters.

        Split dx back into the (R, s, a) token gradients; each Linear's backward gives its weight and bias
        gradients; the timestep table's comes from all three tokens of its timestep (embedding_backward above).
        """),
    Function("visible_tokens", """
        Question (graded: your answer as a function). k (...) integer positions in a segment, 0-based -> (...).

        The Decision Transformer predicts action a_k from the final hidden state of the state token s_k. Under
        GPT-2's causal mask, how many tokens of x does that state token attend to, itself included? (Which of
        R_k, s_k, a_k does the prediction of a_k see, and why must it not see the third?)
        """),
)


def _draw_embedding(d: Draw) -> Case:
    lead = (d.int(2, 4, "ids dim 0"), *(d.int(1, 4, "ids dim 1") for _ in range(d.int(0, 1, "more ids dims"))))
    V, C = d.int(1, 6, "V"), d.int(1, 4, "C")
    rng = d.rng()
    ids = rng.integers(0, V, size=lead)
    ids.flat[-1] = ids.flat[0]  # a repeated id in every input: its rows of dout must add up
    return Case({"weight": rng.standard_normal((V, C))}, {"ids": ids}, seed=int(rng.integers(2**31)))


def _args_embedding(a: dict, c: dict) -> tuple:
    return c["ids"], a["weight"]


def _grads_embedding(returned: Any) -> dict[str, Any]:
    return {"weight": returned}


def _draw_dt(d: Draw) -> Case:
    B, T = d.int(1, 2, "B"), d.int(1, 4, "T")
    S, A, C, V = d.int(1, 4, "state_dim"), d.int(1, 3, "act_dim"), d.int(1, 5, "C"), d.int(1, 6, "max_ep_len")
    rng = d.rng()
    arrays = {"returns_to_go": rng.standard_normal((B, T, 1)), "states": rng.standard_normal((B, T, S)),
              "actions": rng.standard_normal((B, T, A)), "embed_timestep.weight": rng.standard_normal((V, C))}
    for name, n in (("return", 1), ("state", S), ("action", A)):
        arrays[f"embed_{name}.weight"] = rng.standard_normal((C, n))
        arrays[f"embed_{name}.bias"] = rng.standard_normal(C)
    return Case(arrays, {"timesteps": rng.integers(0, V, size=(B, T))}, seed=int(rng.integers(2**31)))


def _args_dt(a: dict, c: dict) -> tuple:
    return a["returns_to_go"], a["states"], a["actions"], c["timesteps"], {k: a[k] for k in PARAM_NAMES}


def _grads_dt(returned: Any) -> dict[str, Any]:
    return returned if isinstance(returned, dict) else {}


def _draw_positions(d: Draw) -> Case:
    shape = tuple(d.int(1, 4, f"dim {i}") for i in range(d.int(1, 2, "number of dims")))
    return Case({}, {"k": d.rng().integers(0, 1000, size=shape)})


UNITS = (
    Pair("embedding_forward", "embedding_backward", _draw_embedding, _args_embedding, _grads_embedding,
         (("dweight", ("weight",)),)),
    Pair("dt_embed_forward", "dt_embed_backward", _draw_dt, _args_dt, _grads_dt,
         tuple((f"d{n}", tuple(k for k in PARAM_NAMES if k.startswith(n + ".")))
               for n in ("embed_return", "embed_state", "embed_action", "embed_timestep"))),
    Question("visible_tokens", _draw_positions, lambda a, c: (c["k"],), "tokens seen"),
)

ASSIGNMENT = Assignment(name="dt_embedding", number=5, title="The Decision Transformer's token embedding",
                        intro=INTRO, preamble=PREAMBLE, functions=FUNCTIONS, module=__name__, units=UNITS)
