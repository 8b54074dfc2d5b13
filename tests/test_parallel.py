"""DataParallel: a step split over replicas in threads is the single model's step (to float round-off), against
the plain model and, in float64, against the reference; with dropout on too (each replica draws its rows of the
model's masks); uneven splits and uneven padding; grad mode, BLAS threads, errors, the strict backend."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidt
from minidt import DataParallel, DecisionTransformerConfig, DecisionTransformerModel, parity
from minidt.backend import Generator, to_numpy
from minidt.losses import dt_loss
from minidt.optim import AdamW, LinearWarmup
from minidt.parallel import RowsOfBatch
from minidt.train import train_step

from conftest import require


def config(dropout: float = 0.0, **kw) -> DecisionTransformerConfig:
    return DecisionTransformerConfig(state_dim=5, act_dim=2, hidden_size=16, n_layer=2, n_head=2, max_ep_len=50,
                                     resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, **kw)


def uneven_inputs(cfg: DecisionTransformerConfig, B: int, T: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The first rows all real, the later ones mostly padding: the replicas' rows hold very different numbers of
    real tokens, so a sum of per-replica mean-loss gradients would be wrong by a factor per replica."""
    x = parity.make_inputs(cfg, B, T, seed)
    x["attention_mask"][:] = 1.0
    x["attention_mask"][(B + 1) // 2:, :T - 2] = 0.0  # two real steps: one (t, t+1) pair for the next-step terms
    return x


def step(model, x: dict, dtype: str) -> tuple:
    """forward, the DT loss with all three heads, zero_grad, backward: (outputs, loss, {name: grad})."""
    x = {k: model.backend.asarray(v if k == "timesteps" else v.astype(dtype)) for k, v in x.items()}
    out = model(**x, output_hidden_states=True, output_attentions=True)
    loss, grads = dt_loss(out, x["states"], x["actions"], x["returns_to_go"], x["attention_mask"], 0.5, 0.25)
    model.zero_grad()
    model.backward(*grads)
    return out, loss, {n: None if p.grad is None else to_numpy(p.grad) for n, p in model.named_parameters()}


def assert_close(a, b, rtol: float) -> None:
    a, b = np.asarray(to_numpy(a), np.float64), np.asarray(to_numpy(b), np.float64)
    assert a.shape == b.shape
    scale = max(float(np.max(np.abs(b))), 1e-30) if b.size else 1.0
    assert float(np.max(np.abs(a - b), initial=0.0)) <= rtol * scale


def assert_steps_equal(ours: tuple, theirs: tuple, rtol: float, real3: np.ndarray) -> None:
    (out_a, loss_a, ga), (out_b, loss_b, gb) = ours, theirs
    assert_close(loss_a, loss_b, rtol)
    for name in ("state_preds", "action_preds", "return_preds"):
        assert_close(getattr(out_a, name), getattr(out_b, name), rtol)
    for a, b in zip(out_a.hidden_states + (out_a.last_hidden_state,), out_b.hidden_states + (out_b.last_hidden_state,)):
        assert_close(to_numpy(a)[real3], to_numpy(b)[real3], rtol)  # padded positions are garbage on both sides
    for a, b in zip(out_a.attentions, out_b.attentions):
        assert_close(np.moveaxis(to_numpy(a), 1, 2)[real3], np.moveaxis(to_numpy(b), 1, 2)[real3], rtol)
    assert ga.keys() == gb.keys()
    for name in ga:
        assert (ga[name] is None) == (gb[name] is None), name
        if ga[name] is not None:
            assert_close(ga[name], gb[name], rtol)


@pytest.mark.parametrize("B,workers", [(7, 3), (8, 2), (3, 4), (1, 2), (5, 5)])
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_a_step_equals_the_single_model_step(B, workers, dtype, rtol):
    """Uneven splits, a batch smaller than the workers, one row: outputs, loss and every gradient as the plain
    model's, dropout 0, with uneven padding (which catches a wrongly weighted sum)."""
    cfg = config()
    single = DecisionTransformerModel(cfg, dtype=dtype, seed=1)
    parity.perturb_layernorms(single, 1)
    dp = DataParallel(DecisionTransformerModel(cfg, dtype=dtype, seed=1).load_state_dict(single.state_dict()),
                      workers)
    x = uneven_inputs(cfg, B, 6, seed=B)
    real3 = np.repeat(x["attention_mask"], 3, axis=1) > 0
    assert_steps_equal(step(dp, x, dtype), step(single, x, dtype), rtol, real3)


def test_a_per_replica_mean_loss_would_be_wrong():
    """The point of the uneven-padding inputs: weighting each replica's mean loss equally gives other gradients
    (so the test above can fail), while DataParallel's sum of the whole-batch loss's rows is exact."""
    cfg = config()
    x = uneven_inputs(cfg, 8, 6)
    model = DecisionTransformerModel(cfg, dtype="float64", seed=0)
    _, _, whole = step(model, x, "float64")
    halves = {}
    for rows in (slice(0, 4), slice(4, 8)):
        _, _, g = step(model, {k: v[rows] for k, v in x.items()}, "float64")
        halves = {n: halves.get(n, 0) + 0.5 * g[n] for n in g if g[n] is not None}
    w = "encoder.h.0.mlp.c_fc.weight"
    assert np.max(np.abs(halves[w] - whole[w])) > 0.1 * np.max(np.abs(whole[w]))


@given(B=st.integers(1, 9), workers=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_with_dropout_the_step_is_the_single_models_whatever_the_split(B, workers, seed):
    """Each replica draws its rows of the masks the model draws for the whole batch, and leaves the model's stream
    where the whole draw leaves it: the same step to round-off, the same generator state to the bit."""
    cfg = config(dropout=0.3)
    single = DecisionTransformerModel(cfg, dtype="float64", seed=seed)
    dp = DataParallel(DecisionTransformerModel(cfg, dtype="float64", seed=seed), workers)
    x = uneven_inputs(cfg, B, 5, seed)
    real3 = np.repeat(x["attention_mask"], 3, axis=1) > 0
    for _ in range(2):  # the second step starts from the stream the first left
        assert_steps_equal(step(dp, x, "float64"), step(single, x, "float64"), 1e-12, real3)
        assert dp.module.gen.get_state() == single.gen.get_state()


@given(start=st.integers(0, 6), rows=st.integers(1, 6), per_row=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_rows_of_batch_draws_the_whole_draws_rows(start, rows, per_row, seed):
    """Odd and even offsets and row lengths (two 32-bit draws share a 64-bit word)."""
    B = start + rows + 2
    whole = Generator(seed)
    part = RowsOfBatch(None)
    part.set_state(whole.get_state())
    part.rows = (start, start + rows, B)
    mine = part.random_bits(rows * per_row)
    bits = whole.random_bits(B * per_row)
    np.testing.assert_array_equal(mine, bits[start * per_row:(start + rows) * per_row])
    assert part.get_state() == whole.get_state()
    odd = RowsOfBatch(None)
    odd.rows = (0, 3, 4)
    with pytest.raises(RuntimeError, match="a random draw of 7 bits is not 3 rows"):
        odd.random_bits(7)


def test_a_step_against_the_reference_float64():
    """DataParallel's gradients of the original trainer's loss (the mean over real actions) against transformers'
    on the same weights, uneven split and padding, dropout 0: the parity tolerances."""
    torch = require("torch")
    cfg = config()
    model = DecisionTransformerModel(cfg, dtype="float64", seed=3)
    parity.perturb_layernorms(model, 3)
    dp = DataParallel(model, 3)
    x = uneven_inputs(cfg, 7, 6, seed=3)
    out = dp(**x)
    loss, grads = dt_loss(out, x["states"], x["actions"], x["returns_to_go"], x["attention_mask"])
    dp.zero_grad()
    dp.backward(*grads)

    ref = parity.reference_model(cfg, model.state_dict(), "float64")
    t = {k: torch.tensor(v, dtype=torch.long if k == "timesteps" else torch.float64) for k, v in x.items()}
    _, action_preds, _ = ref(**t, return_dict=False)
    real = t["attention_mask"].reshape(-1) > 0
    ref_loss = torch.mean((action_preds.reshape(-1, 2)[real] - t["actions"].reshape(-1, 2)[real]) ** 2)
    ref_loss.backward()
    out_tol, grad_tol = parity.TOLERANCES["float64"]
    assert parity.rel_error(to_numpy(loss), ref_loss.detach().numpy())[1] <= out_tol
    ref_params = dict(ref.named_parameters())
    for name, p in dp.named_parameters():
        theirs = ref_params[name].grad
        theirs = np.zeros(p.shape) if theirs is None else theirs.numpy()
        ours = np.zeros(p.shape) if p.grad is None else to_numpy(p.grad)
        assert parity.rel_error(ours, theirs)[1] <= grad_tol, name


def test_train_step_with_dataparallel_equals_the_single_model():
    """minidt.train.train_step, unchanged, on a DataParallel: three steps with dropout, AdamW replacing p.data every
    step (the replicas must follow), the same weights, losses and gradient norms."""
    cfg = config(dropout=0.1)
    runs = []
    for workers in (None, 3):
        model = DecisionTransformerModel(cfg, dtype="float64", seed=5)
        net = model if workers is None else DataParallel(model, workers)
        opt = AdamW(net.parameters(), lr=1e-2)
        sched = LinearWarmup(opt, 2)
        x = uneven_inputs(cfg, 8, 6, seed=5)
        history = [tuple(float(v) for v in train_step(net, opt, sched, x, 0.25)) for _ in range(3)]
        runs.append((history, model.state_dict(), model.gen.get_state()))
    (ha, wa, ra), (hb, wb, rb) = runs
    np.testing.assert_allclose(ha, hb, rtol=1e-11)
    for name in wa:
        assert_close(wb[name], wa[name], 1e-10)
    assert ra == rb


def test_replicas_share_the_arrays_and_keep_their_own_caches():
    cfg = config()
    model = DecisionTransformerModel(cfg, seed=0)
    dp = DataParallel(model, 2)
    x = parity.make_inputs(cfg, 4, 3)
    dp(**x)
    for p, q in zip(model.parameters(), dp.replicas[1].parameters()):
        assert q.data is p.data and q is not p
    ln = [r.encoder.h[0].ln_1.cache for r in dp.replicas]
    assert ln[0][0].shape[0] == 2 and ln[0][0] is not ln[1][0]  # each its own rows' cache
    assert getattr(model.encoder.h[0].ln_1, "cache", None) is None  # the model itself ran nothing


def test_grad_mode_holds_in_the_workers():
    cfg = config()
    dp = DataParallel(DecisionTransformerModel(cfg, seed=0), 2)
    x = parity.make_inputs(cfg, 4, 3)
    with minidt.no_grad():
        dp(**x)
    assert all(getattr(m, "cache", None) is None for r in dp.replicas for m in r.modules())
    with pytest.raises(RuntimeError, match="DecisionTransformerModel.backward.*no_grad"):
        dp.backward(action_preds=np.ones((4, 3, 2)))
    assert minidt.is_grad_enabled()
    with minidt.no_grad():
        modes = dp.in_threads([minidt.is_grad_enabled, minidt.is_grad_enabled])
    assert modes == [False, False]
    assert dp.in_threads([minidt.is_grad_enabled, minidt.is_grad_enabled]) == [True, True]


def test_blas_is_one_thread_per_worker_while_they_run_and_restored_after():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

    dp = DataParallel(DecisionTransformerModel(config(), seed=0), 2)
    before = blas_threads()
    inside = dp.in_threads([blas_threads, blas_threads])
    assert inside == [[1] * len(before)] * 2 and blas_threads() == before


def test_get_action_and_the_mode_pass_through():
    cfg = config()
    model = DecisionTransformerModel(cfg, dtype="float64", seed=0)
    dp = DataParallel(model, 2)
    x = parity.make_inputs(cfg, 5, 4)
    with pytest.raises(RuntimeError, match="get_action: expected eval mode"):
        dp.get_action(**x)
    assert dp.eval() is dp and not model.training and not dp.training
    np.testing.assert_allclose(dp.get_action(**x), model.get_action(**x), rtol=0, atol=1e-14)
    assert dp.train() is dp and model.training
    model.eval()  # the model's own switch reaches the replicas too
    assert dp.get_action(**x).shape == (5, 2)
    assert dp.config is model.config and dp.backend is model.backend and dp.dtype == model.dtype
    assert [n for n, _ in dp.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert dp.parameters() == model.parameters()
    assert repr(dp).startswith("DataParallel(workers=2\n  (module): DecisionTransformerModel(")


def test_gradients_accumulate_and_zero_grad():
    cfg = config()
    model = DecisionTransformerModel(cfg, dtype="float64", seed=0)
    dp = DataParallel(model, 2)
    x = parity.make_inputs(cfg, 4, 3)
    g = np.ones((4, 3, 2))
    dp(**x)
    dp.backward(action_preds=g)
    once = {n: p.grad.copy() for n, p in model.named_parameters() if p.grad is not None}
    dp(**x)
    dp.backward(action_preds=g)
    for n, p in model.named_parameters():
        if n in once:
            np.testing.assert_allclose(p.grad, 2 * once[n], rtol=1e-12)
    dp.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is None for r in dp.replicas for p in r.parameters())


def test_on_the_strict_backend_and_after_a_move():
    """Default workers: 1 off the numpy backend (DataParallel is then the model itself); two replicas on strict
    arrays equal one; the replicas follow the model to another backend."""
    cfg = config(dropout=0.2)
    x = parity.make_inputs(cfg, 5, 4)
    assert DataParallel(DecisionTransformerModel(cfg, backend="strict", seed=0)).workers == 1
    single = DecisionTransformerModel(cfg, dtype="float64", backend="strict", seed=2)
    dp = DataParallel(DecisionTransformerModel(cfg, dtype="float64", backend="strict", seed=2), 2)
    real3 = np.repeat(x["attention_mask"], 3, axis=1) > 0
    assert_steps_equal(step(dp, x, "float64"), step(single, x, "float64"), 1e-12, real3)
    dp.module.to("cpu")
    single.to("cpu")
    assert_steps_equal(step(dp, x, "float64"), step(single, x, "float64"), 1e-12, real3)
    assert dp.replicas[0].backend.name == "numpy"


def test_default_workers_are_the_usable_cores():
    import os

    dp = DataParallel(DecisionTransformerModel(config(), seed=0))
    assert dp.workers == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("workers", [0, -1, 1.5, "2", True])
def test_bad_workers_name_the_argument(workers):
    with pytest.raises(ValueError, match=f"workers: expected a positive integer, got {workers!r}"):
        DataParallel(DecisionTransformerModel(config(), seed=0), workers)


def test_bad_input_names_the_argument():
    cfg = config()
    dp = DataParallel(DecisionTransformerModel(cfg, seed=0), 2)
    x = parity.make_inputs(cfg, 4, 3)
    with pytest.raises(ValueError, match=r"actions: expected 4 rows first \(the batch, as states has\), got "
                                         r"shape \(3, 3, 2\)"):
        dp(**dict(x, actions=x["actions"][:3]))
    with pytest.raises(RuntimeError, match="DataParallel.backward: no forward pass"):
        dp.backward(action_preds=np.ones((4, 3, 2)))
    bad_t = x["timesteps"].copy()
    bad_t[3, 0] = 99  # in the second replica's rows: its error comes back from its thread
    with pytest.raises(ValueError, match="timesteps: expected values in"):
        dp(**dict(x, timesteps=bad_t))
    dp(**x)
    with pytest.raises(ValueError, match=r"action_preds: expected the gradient of a batch of 4"):
        dp.backward(action_preds=np.ones((3, 3, 2)))
    with pytest.raises(ValueError, match="states: expected an array"):
        dp(**dict(x, states=None))
