"""Delayed rewards, the paper's Table 7 setting: every episode's rewards moved to its last step.

    r'_t = 0 for t < T - 1,   r'_{T-1} = r_0 + r_1 + ... + r_{T-1}

The return is unchanged, so returns-to-go become R'_t = R (the whole return) at every step: a return-conditioned
model sees the same number until the episode ends, and a TD learner sees a reward only at the end (Chen et al.
2021, section 5.2: "Decision Transformer ... is robust to delayed rewards", CQL is not). The reference repo's
`mode == 'delayed'` does the same: `path['rewards'][-1] = path['rewards'].sum(); path['rewards'][:-1] = 0`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .trajectories import TrajectoryDataset


def delay_rewards(dataset: TrajectoryDataset) -> TrajectoryDataset:
    """A new dataset, the same episodes with each one's rewards summed onto its last step (observations, actions,
    terminations and truncations shared with the original, which is not changed). The name gains "-delayed"; the
    metadata says "rewards": "delayed"; scale, env_id and so normalized scores stay the original's. Delaying a
    delayed dataset changes nothing."""
    episodes = []
    for e in dataset:
        rewards = np.zeros_like(e.rewards)
        rewards[-1] = np.sum(e.rewards)  # the sum in float64, as Episode.ret adds them
        episodes.append(dataclasses.replace(e, rewards=rewards))
    name = dataset.name if dataset.metadata.get("rewards") == "delayed" else f"{dataset.name}-delayed"
    return TrajectoryDataset(episodes, name=name, env_id=dataset.env_id, scale=dataset.scale,
                             metadata={**dataset.metadata, "rewards": "delayed"})
