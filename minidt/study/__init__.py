"""The paper's claims, checked: `minidt study NAME`, each study a small seeded experiment that trains its runs in
a pool of processes, evaluates them and prints one table with the paper's numbers beside ours.

    percent-bc            DT against %BC, BC on the best 10 / 25 / 40 / 100 % of episodes    (the paper's Table 3)
    delayed-reward        DT, BC, %BC and TD3+BC on original and delayed rewards              (Table 7)
    context-length        DT with K = 1, 5, 20, 50                                             (Table 5)
    key-to-door           DT, BC, %BC and the random policy on 1,000 and 10,000 episodes      (Table 6)
    return-conditioning   minidt train's default run over several seeds                       (Figure 4)

One file per study (its fixed settings, its runs, its table and figure), the runner (runner.py: the pool, resume,
study.json), one run in its process (worker.py), what runs cost (plan.py) and the table (table.py).
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> its module in this package
STUDIES: dict[str, str] = {
    "percent-bc": "percent_bc",
    "delayed-reward": "delayed_reward",
    "context-length": "context_length",
    "key-to-door": "key_to_door",
    "return-conditioning": "return_conditioning",
}


def study_module(name: str) -> ModuleType:
    """The module of the study `name`: config(smoke), plan(config, seeds), extra(config, seeds),
    table(config, runs, extra) and figure(study, path), and its TITLE."""
    return importlib.import_module(f".{STUDIES[name]}", __name__)
