"""TD3+BC's networks (Fujimoto & Gu 2021, the authors' TD3_BC.py): an actor and twin critics, each an MLP of
minidt's own Linear and ReLU layers with the backward written out.

    actor     pi(s)   = mid + half * tanh(l3(relu(l2(relu(l1(s))))))             (B, state_dim) -> (B, act_dim)
    critic    Q_k(s, a) = l3(relu(l2(relu(l1([s, a])))))   for k = 1, 2        (B, state_dim), (B, act_dim) -> (B, 1)

mid and half are the centre and half-width of the action box, so tanh's (-1, 1) covers it exactly (the paper's
`max_action * tanh(...)` for the symmetric boxes it uses). Hidden layers 256 wide, as the paper.

The critic's backward returns d/d(state) and d/d(action) as well as adding into its weights' grads: the actor is
trained through it. For the actor's loss L(pi(s)) = -lambda mean_i Q_1(s_i, pi(s_i)) + ..., the chain rule gives

    dL/dtheta_pi = sum_i  dL/dQ_1,i  *  dQ_1/da (s_i, a = pi(s_i))  *  dpi/dtheta_pi (s_i)

so the actor's update is: forward the actor, forward Q_1 on its actions, run Q_1's backward from dL/dQ_1 down to
its action input (`QNetwork.backward` returns it), add the BC term's gradient there, and run the actor's backward
from that. The product dQ_1/da is the critic's backward through l3, relu, l2, relu and the action columns of l1:
dQ/d[s, a] = W1^T (relu'(h1) * (W2^T (relu'(h2) * W3^T))), split into its state and action columns.

Initialization: PyTorch's nn.Linear default, weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which the paper's
code inherits (minidt's Linear starts N(0, 0.02^2), the transformers scheme, which would make Q near 0 at the start
and the BC term's lambda = alpha / mean |Q| enormous).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import Backend, Generator, array_namespace, to_numpy
from ..layers import Activation, Linear, Module

HIDDEN = 256  # the paper's width, for every hidden layer of the actor and both critics


def torch_default_init(layer: Linear, gen: Generator) -> Linear:
    """weight and bias redrawn from U(-1/sqrt(in_features), 1/sqrt(in_features)), as torch.nn.Linear starts
    (kaiming_uniform_ with a = sqrt(5) comes to that bound; the bias uses the same one). Drawn on the host, as every
    minidt weight, so one seed gives the same network on every backend."""
    out_features, in_features = layer.weight.shape
    bound = 1.0 / math.sqrt(in_features)
    dtype = layer.weight.data.dtype
    for p, shape in ((layer.weight, (out_features, in_features)), (layer.bias, (out_features,))):
        p.data = layer.backend.asarray(gen.rng.uniform(-bound, bound, size=shape), dtype=dtype)
    return layer


class MLP3(Module):
    """Three Linear layers with ReLU between them: in_features -> hidden -> hidden -> out_features, the body of
    both networks. x (B, in_features) -> (B, out_features)."""

    def __init__(self, in_features: int, out_features: int, hidden: int = HIDDEN, *, gen: Generator,
                 backend: "str | Backend | None" = None, dtype: str = "float32"):
        super().__init__(backend, dtype)
        kw = dict(gen=gen, backend=self.backend, dtype=dtype)
        self.l1 = torch_default_init(Linear(in_features, hidden, **kw), gen)
        self.act1 = Activation("relu")
        self.l2 = torch_default_init(Linear(hidden, hidden, **kw), gen)
        self.act2 = Activation("relu")
        self.l3 = torch_default_init(Linear(hidden, out_features, **kw), gen)

    def forward(self, x: Any) -> Any:
        return self.l3(self.act2(self.l2(self.act1(self.l1(x)))))

    def backward(self, dout: Any) -> Any:
        """dout (B, out_features) -> dx (B, in_features); adds into every weight's grad."""
        self.require_forward()
        return self.l1.backward(self.act1.backward(self.l2.backward(self.act2.backward(self.l3.backward(dout)))))


class Actor(Module):
    """pi(s) = mid + half * tanh(MLP3(s)): a deterministic policy whose actions lie inside the box [low, high].

    state (B, state_dim), normalized as the training data was -> action (B, act_dim) in the environment's units."""

    def __init__(self, state_dim: int, act_dim: int, action_low: Any, action_high: Any, hidden: int = HIDDEN, *,
                 gen: Generator, backend: "str | Backend | None" = None, dtype: str = "float32"):
        super().__init__(backend, dtype)
        low, high = (np.broadcast_to(np.asarray(v, np.float64), (act_dim,)) for v in (action_low, action_high))
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (low < high).all()):
            raise ValueError(f"action_low, action_high: expected finite bounds with low < high in each of the "
                             f"{act_dim} dimensions, got {low.tolist()} and {high.tolist()}")
        self.net = MLP3(state_dim, act_dim, hidden, gen=gen, backend=self.backend, dtype=dtype)
        self.tanh = Activation("tanh")
        self.mid = self.backend.asarray((low + high) / 2, dtype=dtype)  # act_dim
        self.half = self.backend.asarray((high - low) / 2, dtype=dtype)  # act_dim

    def forward(self, state: Any) -> Any:
        return self.mid + self.half * self.tanh(self.net(state))  # B,act_dim

    def backward(self, daction: Any) -> Any:
        """daction (B, act_dim) -> dstate (B, state_dim); adds into every weight's grad."""
        self.require_forward()
        return self.net.backward(self.tanh.backward(daction * self.half))

    def to(self, device: "str | Backend") -> "Actor":
        super().to(device)
        self.mid, self.half = (self.backend.asarray(np.array(to_numpy(v))) for v in (self.mid, self.half))
        return self


class QNetwork(Module):
    """One critic: Q(s, a) = MLP3([s, a]). state (B, state_dim), action (B, act_dim) -> q (B, 1)."""

    def __init__(self, state_dim: int, act_dim: int, hidden: int = HIDDEN, *, gen: Generator,
                 backend: "str | Backend | None" = None, dtype: str = "float32"):
        super().__init__(backend, dtype)
        self.state_dim = state_dim
        self.net = MLP3(state_dim + act_dim, 1, hidden, gen=gen, backend=self.backend, dtype=dtype)

    def forward(self, state: Any, action: Any) -> Any:
        xp = array_namespace(state, action)
        return self.net(xp.concat([state, action], axis=-1))  # B,1

    def backward(self, dq: Any) -> tuple[Any, Any]:
        """dq (B, 1) -> (dstate (B, state_dim), daction (B, act_dim)): the gradient reaches the action input,
        which is how the actor learns. Adds into every weight's grad."""
        self.require_forward()
        dsa = self.net.backward(dq)  # B,state_dim+act_dim
        return dsa[:, : self.state_dim], dsa[:, self.state_dim:]


class Critic(Module):
    """Twin critics Q_1, Q_2 (separate weights, the same input): TD3's clipped double Q-learning takes the smaller
    of their targets. forward(state, action) -> (q1, q2), each (B, 1)."""

    def __init__(self, state_dim: int, act_dim: int, hidden: int = HIDDEN, *, gen: Generator,
                 backend: "str | Backend | None" = None, dtype: str = "float32"):
        super().__init__(backend, dtype)
        kw = dict(gen=gen, backend=self.backend, dtype=dtype)
        self.q1 = QNetwork(state_dim, act_dim, hidden, **kw)
        self.q2 = QNetwork(state_dim, act_dim, hidden, **kw)

    def forward(self, state: Any, action: Any) -> tuple[Any, Any]:
        return self.q1(state, action), self.q2(state, action)

    def backward(self, dq1: Any, dq2: Any) -> tuple[Any, Any]:
        """(dq1, dq2), each (B, 1) -> (dstate, daction), the sums over both critics."""
        self.require_forward()
        ds1, da1 = self.q1.backward(dq1)
        ds2, da2 = self.q2.backward(dq2)
        return ds1 + ds2, da1 + da2
