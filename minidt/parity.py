"""The cross-check against transformers: identical weights and inputs, every output and every gradient compared.

Used by the parity tests and by `minidt parity`. Needs torch and transformers (the `test` extra).

What is compared, and why only there: outputs at unmasked positions (a padded query row is finite garbage whose
value differs between transformers versions), and gradients for upstream gradients that are zero at padded
positions (the trainer's masked loss gives exactly that). Dropout is switched off in both models (the two cannot
draw the same masks), which is why the config's dropout probabilities are set to 0 here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import to_numpy
from .config import DecisionTransformerConfig
from .model import DecisionTransformerModel

TOLERANCES = {  # (outputs, gradients): relative error against the float64 reference
    "float64": (1e-9, 1e-8),
    "float32": (1e-4, 2e-3),
}


@dataclass
class Row:
    name: str
    kind: str  # "output" or "grad"
    max_abs: float
    max_rel: float
    tol: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_rel)) and self.max_rel <= self.tol


def rel_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, max |a - b| / max |b|): the error relative to the reference's scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0:
        return 0.0, 0.0
    err = float(np.max(np.abs(a - b)))
    scale = float(np.max(np.abs(b)))
    return err, (err / scale if scale > 0 else err)


def reference_model(config: DecisionTransformerConfig, state: dict[str, np.ndarray], dtype: str = "float64"):
    """transformers' DecisionTransformerModel with eager attention, the given weights, in train mode."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # its bos/eos vocabulary warning is about text models, not ours
    ref_config = transformers.DecisionTransformerConfig(**{k: v for k, v in config.to_dict().items()
                                                           if k not in ("architectures", "transformers_version")})
    ref_config._attn_implementation = "eager"
    ref = transformers.DecisionTransformerModel(ref_config).to(getattr(torch, dtype))
    ref.load_state_dict({k: torch.from_numpy(np.array(v, dtype=dtype)) for k, v in state.items()}, strict=False)
    return ref.train()


def make_inputs(config: DecisionTransformerConfig, batch: int, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float64 inputs; every row left-padded by a random amount, the last step always real. A discrete
    model's actions are one-hot rows of random actions."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, steps))
    for b in range(batch):
        mask[b, : rng.integers(0, steps)] = 0.0  # 0 .. steps-1 padded steps
    if config.discrete_actions:
        actions = np.eye(config.act_dim)[rng.integers(0, config.act_dim, size=(batch, steps))]
    else:
        actions = rng.uniform(-1, 1, size=(batch, steps, config.act_dim))
    return {
        "states": rng.normal(size=(batch, steps, config.state_dim)),
        "actions": actions,
        "rewards": rng.normal(size=(batch, steps, 1)),
        "returns_to_go": rng.normal(size=(batch, steps, 1)),
        "timesteps": rng.integers(0, config.max_ep_len, size=(batch, steps)),
        "attention_mask": mask,
    }


def compare(model: DecisionTransformerModel, inputs: dict[str, np.ndarray], seed: int = 0,
            reference_dtype: str = "float64") -> list[Row]:
    """Run `model` and the reference on the same weights and inputs (the model's dropout must be 0), forward and
    backward; one Row per output and per parameter gradient."""
    import torch

    dtype = str(to_numpy(model.embed_ln.weight.data).dtype)
    out_tol, grad_tol = TOLERANCES[dtype if reference_dtype == "float64" else "float32"]
    tdtype = getattr(torch, reference_dtype)
    ref = reference_model(model.config, model.state_dict(), reference_dtype)
    mask = inputs["attention_mask"]
    mask3 = np.repeat(mask, 3, axis=1)  # B,3T  token mask
    rng = np.random.default_rng(seed + 1)

    t = {k: torch.tensor(v, dtype=torch.long if k == "timesteps" else tdtype) for k, v in inputs.items()}
    ref_out = ref(**t, output_hidden_states=True, output_attentions=True, return_dict=True)
    model.train()
    out = model(**inputs, output_hidden_states=True, output_attentions=True)

    rows: list[Row] = []

    def add(name: str, kind: str, ours: Any, theirs: Any, keep: np.ndarray | None, tol: float) -> None:
        a, b = to_numpy(ours), theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
        if keep is not None:
            a, b = a[keep], b[keep]
        rows.append(Row(name, kind, *rel_error(a, b), tol))

    real, real3 = mask > 0, mask3 > 0
    for name in ("state_preds", "action_preds", "return_preds"):
        add(name, "output", getattr(out, name), getattr(ref_out, name), real, out_tol)
    add("last_hidden_state", "output", out.last_hidden_state, ref_out.last_hidden_state, real3, out_tol)
    for i, (a, b) in enumerate(zip(out.hidden_states, ref_out.hidden_states)):
        add(f"hidden_states[{i}]", "output", a, b, real3, out_tol)
    for i, (a, b) in enumerate(zip(out.attentions, ref_out.attentions)):
        q_real = np.broadcast_to(real3[:, None, :], b.shape[:3])  # B,H,3T  rows of unmasked queries
        add(f"attentions[{i}]", "output", a, b, q_real, out_tol)

    grads = {name: rng.normal(size=tuple(getattr(ref_out, name).shape)) * real[..., None]
             for name in ("state_preds", "action_preds", "return_preds")}
    loss = sum((getattr(ref_out, k) * torch.tensor(g, dtype=tdtype)).sum() for k, g in grads.items())
    loss.backward()
    model.zero_grad()
    model.backward(**grads)
    ref_params = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        rp = ref_params[name]
        theirs = rp.grad if rp.grad is not None else torch.zeros_like(rp)
        ours = p.grad if p.grad is not None else np.zeros(p.shape)
        add(f"grad {name}", "grad", ours, theirs, None, grad_tol)
    return rows


def perturb_layernorms(model: DecisionTransformerModel, seed: int = 0) -> None:
    """LayerNorm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2). At init (ones, zeros) a LayerNorm applied twice
    equals it applied once, which would hide a hidden state taken on the wrong side of ln_f."""
    rng = np.random.default_rng(seed + 2)
    for name, p in model.named_parameters():
        if ".ln_" in name or name.startswith("embed_ln") or ".ln_f" in name:
            base = 1.0 if name.endswith("weight") else 0.0
            p.data = model.backend.asarray(base + 0.1 * rng.normal(size=p.shape), dtype=p.data.dtype)


def no_dropout(config: DecisionTransformerConfig) -> DecisionTransformerConfig:
    d = config.to_dict()
    d.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return DecisionTransformerConfig.from_dict(d)


def run(config: DecisionTransformerConfig | None = None, checkpoint: str | None = None, dtype: str = "float64",
        batch: int = 4, steps: int = 10, seed: int = 0, backend: Any = None) -> list[Row]:
    """Build the model (random weights from `config`, or a checkpoint directory), then `compare`."""
    if checkpoint is not None:
        from .checkpoint import read_state

        src = DecisionTransformerModel.from_pretrained(checkpoint, dtype="float64")
        model = DecisionTransformerModel(no_dropout(src.config), dtype=dtype, backend=backend)
        model.load_state_dict(read_state(checkpoint))
    else:
        model = DecisionTransformerModel(no_dropout(config or DecisionTransformerConfig()), dtype=dtype,
                                         backend=backend, seed=seed)
        perturb_layernorms(model, seed)
    steps = min(steps, model.config.n_positions // 3)
    ref_dtype = "float32" if model.config.reorder_and_upcast_attn else "float64"  # the reference raises in float64
    return compare(model, make_inputs(model.config, batch, steps, seed), seed, ref_dtype)


def format_table(rows: list[Row]) -> str:
    w = max(len(r.name) for r in rows)
    lines = [f"{'tensor':<{w}}  {'max abs err':>12}  {'max rel err':>12}  {'tolerance':>9}  result"]
    for r in rows:
        lines.append(f"{r.name:<{w}}  {r.max_abs:12.3e}  {r.max_rel:12.3e}  {r.tol:9.0e}  "
                     f"{'ok' if r.ok else 'FAIL'}")
    bad = sum(not r.ok for r in rows)
    worst_out = max((r.max_rel for r in rows if r.kind == "output"), default=0.0)
    worst_grad = max((r.max_rel for r in rows if r.kind == "grad"), default=0.0)
    lines.append(f"{len(rows) - bad} passed, {bad} failed; worst relative error: outputs {worst_out:.2e}, "
                 f"gradients {worst_grad:.2e}")
    return "\n".join(lines)
