"""The reference for tests/test_td3bc_*.py: TD3+BC in PyTorch, transcribed from the authors' TD3_BC.py
(sfujim/TD3_BC: Actor, Critic, TD3_BC.train), with module names that mirror minidt's so weights copy by name.

The paper's Actor returns `max_action * tanh(...)`; ours `mid + half * tanh(...)` (the same for a symmetric box),
so this one does too. Everything else is the paper's code: F.mse_loss, the detached lambda, the clamp order,
Adam, the Polyak update `tau * param + (1 - tau) * target`."""

from __future__ import annotations

import numpy as np

from minidt import to_numpy


def torch_modules(torch, agent):
    """Torch twins of the agent's four networks (the same weights, float64) -> dict by the agent's names."""
    nn, F = torch.nn, torch.nn.functional

    class MLP3(nn.Module):
        def __init__(self, i, o, h):
            super().__init__()
            self.l1, self.l2, self.l3 = nn.Linear(i, h), nn.Linear(h, h), nn.Linear(h, o)

        def forward(self, x):
            return self.l3(F.relu(self.l2(F.relu(self.l1(x)))))

    class Actor(nn.Module):
        def __init__(self, s, a, h, mid, half):
            super().__init__()
            self.net = MLP3(s, a, h)
            self.mid, self.half = torch.tensor(mid), torch.tensor(half)

        def forward(self, state):
            return self.mid + self.half * torch.tanh(self.net(state))

    class QNetwork(nn.Module):
        def __init__(self, s, a, h):
            super().__init__()
            self.net = MLP3(s + a, 1, h)

        def forward(self, state, action):
            return self.net(torch.cat([state, action], 1))

    class Critic(nn.Module):
        def __init__(self, s, a, h):
            super().__init__()
            self.q1, self.q2 = QNetwork(s, a, h), QNetwork(s, a, h)

        def forward(self, state, action):
            return self.q1(state, action), self.q2(state, action)

    S = agent.actor.net.l1.weight.shape[1]
    A = agent.actor.net.l3.weight.shape[0]
    h = agent.config.hidden
    mid, half = (np.array(to_numpy(v), np.float64) for v in (agent.actor.mid, agent.actor.half))
    out = {"actor": Actor(S, A, h, mid, half), "critic": Critic(S, A, h), "actor_target": Actor(S, A, h, mid, half),
           "critic_target": Critic(S, A, h)}
    for name, ref in out.items():
        ref.double()
        copy_weights(torch, getattr(agent, name), ref)
    return out


def copy_weights(torch, ours, ref) -> None:
    theirs = dict(ref.named_parameters())
    assert set(theirs) == {n for n, _ in ours.named_parameters()}, (sorted(theirs), ours)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            theirs[name].copy_(torch.from_numpy(np.array(to_numpy(p.data), np.float64)))


class TorchTD3BC:
    """TD3_BC.train, transcribed: `step(batch, z)` with the standard-normal draws z (B, act_dim) of our noise stream,
    so both sides smooth with the same numbers."""

    def __init__(self, torch, agent):
        self.t, self.c = torch, agent.config
        nets = torch_modules(torch, agent)
        self.actor, self.critic = nets["actor"], nets["critic"]
        self.actor_target, self.critic_target = nets["actor_target"], nets["critic_target"]
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=self.c.lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=self.c.lr)
        low, high = (torch.tensor(np.array(to_numpy(v), np.float64)) for v in (agent.low, agent.high))
        self.low, self.high = low, high
        self.policy_noise = self.c.policy_noise * (high - low) / 2
        self.noise_clip = self.c.noise_clip * (high - low) / 2
        self.total_it = 0

    def step(self, batch: dict, z: np.ndarray) -> tuple[float, float | None]:
        t, F, c = self.t, self.t.nn.functional, self.c
        state, action, reward, next_state, not_done = (t.from_numpy(np.asarray(batch[k], np.float64)) for k in
                                                       ("states", "actions", "rewards", "next_states", "not_done"))
        self.total_it += 1
        with t.no_grad():
            noise = (t.from_numpy(z) * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
            next_action = (self.actor_target(next_state) + noise).clamp(self.low, self.high)
            target_Q1, target_Q2 = self.critic_target(next_state, next_action)
            target_Q = t.min(target_Q1, target_Q2)
            target_Q = reward + not_done * c.discount * target_Q
        current_Q1, current_Q2 = self.critic(state, action)
        critic_loss = F.mse_loss(current_Q1, target_Q) + F.mse_loss(current_Q2, target_Q)
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()
        actor_loss = None
        if self.total_it % c.policy_freq == 0:
            pi = self.actor(state)
            Q = self.critic.q1(state, pi)
            lmbda = c.alpha / Q.abs().mean().detach()
            actor_loss = -lmbda * Q.mean() + F.mse_loss(pi, action)
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()
            for net, target in ((self.critic, self.critic_target), (self.actor, self.actor_target)):
                for param, target_param in zip(net.parameters(), target.parameters()):
                    target_param.data.copy_(c.tau * param.data + (1 - c.tau) * target_param.data)
            actor_loss = actor_loss.item()
        return critic_loss.item(), actor_loss
