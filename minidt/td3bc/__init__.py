"""TD3+BC (Fujimoto & Gu 2021), the TD-learning baseline beside Decision Transformer: an actor and twin critics
from minidt's own layers, trained by `td3bc_step` on transitions (`minidt.data.transitions.TransitionSampler`).

    networks.py   the actor, the critics, and the actor's gradient through the critic's backward
    losses.py     the TD target, the critic loss, the actor loss with its BC term, and their gradients
    agent.py      the networks, their targets, the optimizers, and one update step
    rollout.py    plain rollouts of the actor (it is not return-conditioned)
    checkpoint.py a run's checkpoints and networks; report.py its evaluation and metrics.json
    train.py      the loop of `minidt train --algo td3bc`
"""

from .agent import TD3BC, TD3BCConfig, polyak_update, td3bc_step
from .losses import actor_loss, critic_loss, td_target
from .networks import Actor, Critic, QNetwork

__all__ = ["TD3BC", "TD3BCConfig", "polyak_update", "td3bc_step", "actor_loss", "critic_loss", "td_target", "Actor",
           "Critic", "QNetwork"]
