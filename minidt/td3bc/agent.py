"""TD3+BC, one update at a time: the networks, their target copies, two Adam optimizers and the update step
(Fujimoto & Gu 2021, Algorithm 1 and the authors' TD3_BC.py, line for line).

    agent = TD3BC(state_dim, act_dim, action_low, action_high, TD3BCConfig(), seed=0)
    critic_loss, actor_loss = td3bc_step(agent, batch)     # batch: a TransitionSampler's, host arrays

One step (losses.py has the losses and their gradients, networks.py the actor's gradient through the critic):

    1. target   a' = clip(pi'(s') + clip(sigma * N(0, 1), -c, c), low, high); y = r + gamma not_done min Q'(s', a')
    2. critic   Q_1, Q_2 on (s, a); L_Q; backward; Adam step
    3. every policy_freq-th step:
       actor    pi(s); Q_1(s, pi(s)); L_pi; Q_1's backward to its action input, plus the BC term's gradient, then
                the actor's backward; Adam step
       targets  theta' <- tau theta + (1 - tau) theta', for the critic and the actor (Polyak averaging)

The actor's loss is differentiated through the *updated* critic (step 2 comes first), as in the paper's code.
The noise sigma and clip c are fractions of the action box's half-width (the paper's `policy_noise * max_action`).
Adam is minidt's AdamW with weight decay 0: its decay factor (1 - lr * 0) is exactly 1, so the bits are Adam's.

Seeded: the weights come from Generator(seed), the smoothing noise from its own stream; the noise is drawn on the
host and moved to the device with the batch, and nothing is read back during a step (tests/test_sync.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..backend import Backend, Generator, get_backend, to_numpy
from ..layers.module import Module, no_grad
from ..optim import AdamW
from .losses import actor_loss, critic_loss, td_target
from .networks import HIDDEN, Actor, Critic

BATCH_KEYS = ("states", "actions", "rewards", "next_states", "not_done")


@dataclass(frozen=True)
class TD3BCConfig:
    """The paper's hyperparameters (Fujimoto & Gu 2021, Table 3 / the authors' main.py) as defaults."""

    hidden: int = HIDDEN  # width of every hidden layer (two per network)
    lr: float = 3e-4  # Adam, actor and critics
    discount: float = 0.99
    tau: float = 0.005  # Polyak averaging of the target networks
    policy_noise: float = 0.2  # target smoothing noise std, as a fraction of the action half-width
    noise_clip: float = 0.5  # ... clipped to this fraction
    policy_freq: int = 2  # one actor and target update per policy_freq critic updates
    alpha: float = 2.5  # the BC term's weight: lambda = alpha / mean |Q|

    def __post_init__(self) -> None:
        for name in ("hidden", "policy_freq"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
        for name, lo, hi in (("lr", 0, np.inf), ("discount", 0, 1), ("tau", 0, 1), ("policy_noise", 0, np.inf),
                             ("noise_clip", 0, np.inf), ("alpha", 0, np.inf)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi or not np.isfinite(v):
                raise ValueError(f"{name}: expected a finite number in [{lo}, {hi}], got {v!r}")
        if self.lr == 0 or self.tau == 0:
            raise ValueError(f"lr and tau: expected > 0, got {self.lr} and {self.tau}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TD3BC:
    """The actor pi, the twin critics Q_1, Q_2, their targets pi', Q_1', Q_2' (copies at the start), and one Adam
    each for pi and for (Q_1, Q_2).

    action_low, action_high (act_dim,): the action box; the actor acts inside it and the smoothed target actions
    are clipped to it. seed: the weights (Generator(seed)) and the smoothing noise (a stream of its own).
    `total_it` counts the steps taken, which decides the delayed updates; checkpoints keep it."""

    def __init__(self, state_dim: int, act_dim: int, action_low: Any, action_high: Any,
                 config: TD3BCConfig | None = None, *, seed: int = 0, backend: "str | Backend | None" = None,
                 dtype: str = "float32"):
        self.config = c = config or TD3BCConfig()
        self.backend = b = get_backend(backend)
        self.dtype = b.dtype(dtype)
        gen = Generator(seed, b)
        self.actor = Actor(state_dim, act_dim, action_low, action_high, c.hidden, gen=gen, backend=b, dtype=dtype)
        self.critic = Critic(state_dim, act_dim, c.hidden, gen=gen, backend=b, dtype=dtype)
        self.actor_target = copy_of(self.actor, Actor(state_dim, act_dim, action_low, action_high, c.hidden,
                                                      gen=Generator(0, b), backend=b, dtype=dtype))
        self.critic_target = copy_of(self.critic, Critic(state_dim, act_dim, c.hidden, gen=Generator(0, b),
                                                         backend=b, dtype=dtype))
        self.actor_opt = AdamW(self.actor.parameters(), lr=c.lr, weight_decay=0.0)
        self.critic_opt = AdamW(self.critic.parameters(), lr=c.lr, weight_decay=0.0)
        self.noise = Generator([seed, 1], b)  # target smoothing noise: apart from the weights' stream
        half = (np.asarray(action_high, np.float64) - np.asarray(action_low, np.float64)) / 2
        self.sigma = b.asarray(np.broadcast_to(c.policy_noise * half, (act_dim,)), dtype=dtype)  # act_dim
        self.clip = b.asarray(np.broadcast_to(c.noise_clip * half, (act_dim,)), dtype=dtype)  # act_dim
        self.low = b.asarray(np.broadcast_to(np.asarray(action_low, np.float64), (act_dim,)), dtype=dtype)
        self.high = b.asarray(np.broadcast_to(np.asarray(action_high, np.float64), (act_dim,)), dtype=dtype)
        self.total_it = 0

    def networks(self) -> dict[str, Module]:
        """The four networks by name: what a checkpoint holds (with the optimizers, the noise stream, total_it)."""
        return {"actor": self.actor, "critic": self.critic, "actor_target": self.actor_target,
                "critic_target": self.critic_target}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every network's weights, "actor.net.l1.weight" ...: host copies (NumPy), for safetensors."""
        return {f"{net}.{name}": np.array(to_numpy(p.data)) for net, m in self.networks().items()
                for name, p in m.named_parameters()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Weights saved by state_dict(), every name and shape checked; moved to this agent's backend and dtype."""
        want = {f"{net}.{name}": p for net, m in self.networks().items() for name, p in m.named_parameters()}
        if set(state) != set(want):
            missing, unexpected = sorted(set(want) - set(state)), sorted(set(state) - set(want))
            raise ValueError(f"TD3BC.load_state_dict: missing {missing[:4]}, unexpected {unexpected[:4]}")
        for name, p in want.items():
            if tuple(state[name].shape) != p.shape:
                raise ValueError(f"TD3BC.load_state_dict: {name}: expected shape {p.shape}, got "
                                 f"{tuple(state[name].shape)}")
            p.data = self.backend.asarray(np.array(to_numpy(state[name])), dtype=self.dtype)


def copy_of(src: Module, dst: Module) -> Module:
    """dst with src's parameter values, copied (a target network starts as its network)."""
    for (name, p), (name2, q) in zip(src.named_parameters(), dst.named_parameters(), strict=True):
        assert name == name2
        q.data = p.data + 0  # a new array: the optimizer must never write into the target's memory
    return dst


def polyak_update(net: Module, target: Module, tau: float) -> None:
    """theta' <- tau theta + (1 - tau) theta' for every parameter, in the paper's order of operations."""
    for p, tp in zip(net.parameters(), target.parameters(), strict=True):
        tp.data = tau * p.data + (1 - tau) * tp.data


def td3bc_step(agent: TD3BC, batch: dict[str, Any]) -> tuple[Any, Any]:
    """One TD3+BC update (the module docstring's steps 1-3) on a batch of transitions: states (B, state_dim)
    normalized, actions (B, act_dim) in the environment's units, rewards (B, 1), next_states (B, state_dim)
    normalized, not_done (B, 1). Host arrays (moved here) or the agent's device arrays.

    Returns (critic_loss, actor_loss): 0-d arrays on the agent's device, actor_loss None on a step without an actor
    update. Reading one on the host stalls a GPU: the trainer reads them once per logging window."""
    c, b, xp = agent.config, agent.backend, agent.backend.xp
    s, a, r, s2, not_done = (b.asarray(batch[k], agent.dtype) for k in BATCH_KEYS)
    agent.total_it += 1
    with no_grad():  # 1. the target: a constant for the critic's loss
        eps = agent.noise.normal(tuple(a.shape), 1.0, agent.dtype) * agent.sigma  # B,act_dim
        noise = xp.minimum(xp.maximum(eps, -agent.clip), agent.clip)
        a2 = xp.minimum(xp.maximum(agent.actor_target(s2) + noise, agent.low), agent.high)  # B,act_dim
        y = td_target(r, not_done, *agent.critic_target(s2, a2), c.discount)  # B,1
    q1, q2 = agent.critic(s, a)  # 2. the critics
    loss_q, (dq1, dq2) = critic_loss(q1, q2, y)
    agent.critic.zero_grad()
    agent.critic.backward(dq1, dq2)
    agent.critic_opt.step()
    if agent.total_it % c.policy_freq:
        return loss_q, None
    pi = agent.actor(s)  # 3. the actor, through the updated Q_1
    q = agent.critic.q1(s, pi)  # B,1
    loss_pi, (dq, dpi_bc), _ = actor_loss(q, pi, a, c.alpha)
    _, dpi_q = agent.critic.q1.backward(dq)  # dL/dQ_1 * dQ_1/da at a = pi(s)
    agent.critic.zero_grad()  # that backward also filled Q_1's weight grads: the actor's loss does not train Q_1
    agent.actor.zero_grad()
    agent.actor.backward(dpi_q + dpi_bc)
    agent.actor_opt.step()
    polyak_update(agent.critic, agent.critic_target, c.tau)
    polyak_update(agent.actor, agent.actor_target, c.tau)
    return loss_q, loss_pi
