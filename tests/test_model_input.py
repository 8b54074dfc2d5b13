"""Bad input to the model API is a ValueError naming the argument, never NumPy's words or a NaN: a table of the
cases the issue lists and a hypothesis fuzz over forward / get_action / backward inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import require
from minidt import DecisionTransformerConfig, DecisionTransformerModel, parity, to_numpy
from minidt.backend import get_backend

SMALL = dict(state_dim=3, act_dim=2, hidden_size=8, n_layer=2, n_head=2, max_ep_len=20, resid_pdrop=0.0,
             embd_pdrop=0.0, attn_pdrop=0.0)
B, T = 2, 4
SHAPES = {"states": (B, T, 3), "actions": (B, T, 2), "returns_to_go": (B, T, 1), "timesteps": (B, T),
          "attention_mask": (B, T)}
GRAD_SHAPES = {"state_preds": (B, T, 3), "action_preds": (B, T, 2), "return_preds": (B, T, 1)}


@pytest.fixture(scope="module")
def model():
    return DecisionTransformerModel(DecisionTransformerConfig(**SMALL), seed=0).eval()


def good():
    return parity.make_inputs(DecisionTransformerConfig(**SMALL), B, T)


def call(model, method, x):
    return model(**x).action_preds if method == "forward" else model.get_action(**x)


def with_value(name, index, value):
    x = good()
    x[name] = x[name].copy()
    x[name][index] = value
    return x


BAD = [  # (argument, inputs, what the message says after "argument: ")
    ("states", with_value("states", (0, 0, 1), np.nan), r"expected finite numbers, got nan at index \(0, 0, 1\)"),
    ("states", with_value("states", (1, 3, 2), np.inf), r"expected finite numbers, got inf at index \(1, 3, 2\)"),
    ("states", with_value("states", (1, 0, 0), -np.inf), "expected finite numbers, got -inf"),
    ("states", with_value("states", (0, 2, 0), 1e39),
     r"expected finite numbers within float32's range \(\|x\| <= 3.403e\+38\), got np.float64\(1e\+39\)"),
    ("actions", with_value("actions", (0, 1, 1), np.nan), "expected finite numbers, got nan"),
    ("returns_to_go", with_value("returns_to_go", (1, 1, 0), np.inf), "expected finite numbers, got inf"),
    ("returns_to_go", with_value("returns_to_go", (1, 1, 0), -3e38 * 10), "expected finite numbers within"),
    ("attention_mask", with_value("attention_mask", (0, 1), 0.5),
     r"expected only 0 \(padding\) and 1 \(real\), got 0.5 at index \(0, 1\)"),
    ("attention_mask", with_value("attention_mask", (1, 2), 2.0), "expected only 0 .* got 2.0"),
    ("attention_mask", with_value("attention_mask", (1, 2), -1.0), "expected only 0 .* got -1.0"),
    ("attention_mask", with_value("attention_mask", (1, 2), np.nan), "expected only 0 .* got nan"),
    ("timesteps", with_value("timesteps", (0, 0), -1), r"expected values in \[0, 19\] \(max_ep_len 20\)"),
    ("timesteps", with_value("timesteps", (0, 0), 20), r"expected values in \[0, 19\]"),
    ("timesteps", {**good(), "timesteps": np.full((B, T), 2**63, np.uint64)}, r"expected values in \[0, 19\]"),
    ("timesteps", {**good(), "timesteps": np.zeros((B, T), bool)}, "expected an integer dtype, got bool"),
    ("timesteps", {**good(), "timesteps": np.zeros((B, T)) + 0.5}, "expected an integer dtype, got float64"),
    ("states", {k: v[:, :0] for k, v in good().items()}, r"expected at least one timestep .*got shape \(2, 0, 3\)"),
    ("states", {k: v[:0] for k, v in good().items()}, r"expected at least one timestep .*got shape \(0, 4, 3\)"),
    ("states", {**good(), "states": [[[0.0, 1.0, 2.0]], [[0.0, 1.0]]]}, "expected an array of real numbers, got "
     "a list that is not one .*inhomogeneous"),
    ("states", {**good(), "states": np.full((B, T, 3), "a")}, "expected real numbers .* got dtype <U1"),
    ("states", {**good(), "states": np.full((B, T, 3), None)}, "expected real numbers .* got dtype object"),
    ("states", {**good(), "states": np.ones((B, T, 3), complex)}, "expected real numbers .* got dtype complex128"),
    ("states", {**good(), "states": "abc"}, "expected real numbers .* got dtype <U3"),
    ("states", {**good(), "states": None}, r"expected an array of shape \(\*, \*, 3\), got None"),
    ("states", {**good(), "states": 1.0}, r"expected shape \(\*, \*, 3\), got \(\)"),
    ("actions", {**good(), "actions": {"a": 1}}, "expected real numbers .* got dtype object"),
    ("returns_to_go", {**good(), "returns_to_go": [[1.0] * T] * B}, r"expected shape \(2, 4, 1\), got \(2, 4\)"),
]


@pytest.mark.parametrize("method", ["forward", "get_action"])
@pytest.mark.parametrize("name, x, says", BAD, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD)])
def test_bad_input_is_refused_by_name(model, method, name, x, says):
    with pytest.raises(ValueError, match=f"^{name}: {says}") as e:
        call(model, method, x)
    assert "\n" not in str(e.value)


def test_a_nan_at_a_padded_step_is_refused_too(model):
    """Today's failure: a NaN where the mask is 0 turned every real output into NaN."""
    x = good()
    x["attention_mask"][0, 0] = 0
    x["states"][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"^states: expected finite numbers, got nan at index \(0, 0, 0\)"):
        model(**x)


def torch_variants(torch):
    x = good()
    return [
        ("torch float32", {k: torch.tensor(v) for k, v in x.items()}),
        ("torch bfloat16", {**x, "states": torch.tensor(x["states"], dtype=torch.bfloat16)}),
        ("torch float16 requires_grad", {**x, "actions": torch.tensor(x["actions"], dtype=torch.float16,
                                                                      requires_grad=True)}),
        ("torch non-contiguous", {**x, "states": torch.tensor(np.swapaxes(x["states"], 0, 1).copy()).transpose(0, 1)}),
    ]


VALID = [  # (what, inputs): each must give the same actions as the float64 NumPy inputs, to float32 round-off
    ("float16 states", {**good(), "states": good()["states"].astype(np.float16)}),
    ("integer and bool inputs", {**good(), "actions": np.ones((B, T, 2), np.int8),
                                 "attention_mask": good()["attention_mask"].astype(bool)}),
    ("int32 timesteps and mask", {**good(), "timesteps": good()["timesteps"].astype(np.int32),
                                  "attention_mask": good()["attention_mask"].astype(np.int64)}),
    ("non-contiguous", {**good(), "states": np.asfortranarray(good()["states"]),
                        "actions": np.repeat(good()["actions"], 2, axis=2)[:, :, ::2]}),
    ("nested lists", {k: v.tolist() for k, v in good().items()}),
]


def test_valid_variants_give_the_same_actions(model):
    torch = require("torch")
    for what, x in VALID + torch_variants(torch):
        ref = {k: to_numpy(v.detach().float() if hasattr(v, "detach") else v) for k, v in x.items()}
        ref = {k: np.asarray(v, np.int64 if k == "timesteps" else np.float64) for k, v in ref.items()}
        np.testing.assert_allclose(model.get_action(**x), model.get_action(**ref), rtol=1e-5, atol=1e-6,
                                   err_msg=what)
        np.testing.assert_allclose(model(**x).action_preds, model(**ref).action_preds, rtol=1e-5, atol=1e-6,
                                   err_msg=what)


def test_torch_tensors_that_are_not_arrays_of_reals_are_refused(model):
    torch = require("torch")
    x = good()
    for value, says in [(torch.tensor(x["states"]).to_sparse(), "expected a dense tensor, got layout torch.sparse_coo"),
                        (torch.tensor(x["states"], dtype=torch.complex64), "expected real numbers"),
                        (torch.tensor(np.full((B, T, 3), np.nan)), "expected finite numbers, got nan")]:
        with pytest.raises(ValueError, match=f"^states: {says}"):
            model(**{**x, "states": value})


def test_float64_model_takes_what_float32_cannot_hold():
    m = DecisionTransformerModel(DecisionTransformerConfig(**SMALL), dtype="float64", seed=0)
    assert np.isfinite(m(**with_value("states", (0, 0, 0), 1e39)).action_preds).all()


def test_device_inputs_are_checked_for_shape_and_dtype_only():
    """On a device backend, host inputs are checked on the host before they move; an array already on the device
    is not read back (a GPU would stall), so its values are the caller's to check: a NaN in it goes through."""
    config = DecisionTransformerConfig(**SMALL)
    dev = DecisionTransformerModel(config, seed=0, backend="strict").eval()
    b = get_backend("strict")
    with pytest.raises(ValueError, match="^states: expected finite numbers, got nan"):
        dev(**with_value("states", (0, 0, 0), np.nan))
    with pytest.raises(ValueError, match="^attention_mask: expected only 0"):
        dev.get_action(**with_value("attention_mask", (0, 0), 0.5))
    on_device = {k: b.asarray(v) for k, v in with_value("states", (0, 0, 0), np.nan).items()}
    assert not np.isfinite(to_numpy(dev(**on_device).action_preds)).all()  # not read: documented, not refused
    with pytest.raises(ValueError, match=r"^actions: expected shape \(2, 4, 2\), got \(2, 4, 3\)"):
        dev(**{**on_device, "actions": b.zeros((B, T, 3), "float32")})
    with pytest.raises(ValueError, match="^timesteps: expected an integer dtype"):
        dev(**{**on_device, "timesteps": b.zeros((B, T), "float32")})


# --- construction, backward, load_state_dict -------------------------------------------------------------------

@pytest.mark.parametrize("make, error, says", [
    (lambda: DecisionTransformerModel({"state_dim": 3}), ValueError,
     r"^config: expected a DecisionTransformerConfig, got dict \(build one with DecisionTransformerConfig"),
    (lambda: DecisionTransformerModel(DecisionTransformerConfig(**SMALL), dtype="int64"), ValueError,
     "^dtype: expected one of float32, float64, got 'int64'"),
    (lambda: DecisionTransformerModel(DecisionTransformerConfig(**SMALL), dtype="float16"), ValueError,
     "^dtype: expected one of float32, float64, got 'float16'"),
    (lambda: DecisionTransformerModel(DecisionTransformerConfig(**SMALL), dtype=np.bool_), ValueError,
     "^dtype: expected one of float32, float64"),
    (lambda: DecisionTransformerModel(state_dim=0), ValueError, "^state_dim: expected a positive integer, got 0"),
    (lambda: DecisionTransformerModel(DecisionTransformerConfig(**SMALL), state_dim=4), ValueError,
     "^config: pass either a config or config fields"),
    (lambda: DecisionTransformerModel(**SMALL).backward(action_preds=np.zeros((B, T, 2))), RuntimeError,
     "^DecisionTransformerModel.backward: no forward pass to differentiate; call forward first"),
    (lambda: DecisionTransformerModel(**SMALL).load_state_dict([("wpe", 1)]), ValueError,
     "^state_dict: expected a mapping of parameter names to arrays .*, got list"),
])
def test_construction_and_misuse_say_what_is_wrong(make, error, says):
    with pytest.raises(error, match=says):
        make()


def test_a_config_changed_into_an_impossible_one_is_refused_by_the_model():
    config = DecisionTransformerConfig(**SMALL)
    config.n_head = 3  # each field is checked when set; that n_head divides hidden_size, when a model is built
    with pytest.raises(ValueError, match="^n_head: expected a divisor of hidden_size 8, got 3"):
        DecisionTransformerModel(config)
    with pytest.raises(ValueError, match="^hidden_size: expected a positive integer, got -8"):
        config.hidden_size = -8


def test_load_state_dict_refuses_bad_values_by_name():
    torch = require("torch")
    m = DecisionTransformerModel(**SMALL, seed=0)
    state = m.state_dict()
    name = "encoder.h.0.attn.c_attn.weight"
    for value, says in [(np.where(state[name] > 0, np.nan, state[name]), "expected finite numbers, got nan"),
                        (np.full(state[name].shape, 1e39), "expected finite numbers within float32's range"),
                        ("weights", "expected real numbers .* got dtype <U7"),
                        (None, "expected real numbers .* got dtype object"),
                        (torch.ones(3).to_sparse(), "expected a dense tensor"),
                        (np.ones((2, 2)), r"expected shape \(8, 24\), got \(2, 2\)")]:
        with pytest.raises(ValueError, match=rf"^state_dict\['{name}'\]: {says}"):
            m.load_state_dict({**state, name: value})
    half = {k: torch.tensor(v).to(torch.bfloat16) for k, v in state.items()}  # converted to the model's dtype
    m.load_state_dict(half)
    np.testing.assert_allclose(m.state_dict()[name], state[name], rtol=1e-2, atol=1e-3)
    assert m.state_dict()[name].dtype == np.float32


# --- the fuzz -------------------------------------------------------------------------------------------------

DTYPES = [np.bool_, np.int8, np.int64, np.uint8, np.uint64, np.float16, np.float32, np.float64, np.complex64,
          np.complex128, np.dtype("U2")]
SPECIAL = {"float": [np.nan, np.inf, -np.inf, 1e39, -1e39, 0.0], "mask": [0.5, 2.0, -1.0, np.nan, 1.0],
           "index": [-1, 19, 20, 2**40]}  # planted into floating arrays (integer ones for "index")


def shapes_near(shape):
    """The right shape, or one with a size changed, a dimension added or dropped, or any small shape."""
    return st.one_of(
        st.just(shape),
        st.builds(lambda i, n: tuple(n if j == i else s for j, s in enumerate(shape)),
                  st.integers(0, len(shape) - 1), st.integers(0, 5)),
        st.just(shape[:-1]), st.just(shape + (1,)), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
    )


@st.composite
def arrays_for(draw, shape, kind):
    """A NumPy array for an argument of this shape: any dtype, NaN / inf / huge / out-of-range entries planted,
    empty, non-contiguous. kind: "float", "mask" or "index" (timesteps) picks the special values."""
    a = draw(hnp.arrays(draw(st.sampled_from(DTYPES)), draw(shapes_near(shape))))
    plant = a.dtype.kind in ("iu" if kind == "index" else "f")
    if a.size and plant and draw(st.booleans()):
        a = a.astype(np.int64 if kind == "index" else np.float64)
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from(SPECIAL[kind]))
    if draw(st.booleans()) and a.ndim:  # a non-contiguous view of the same values
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    return a


@st.composite
def values_for(draw, name, shape, kind):
    """Anything a caller might pass as this argument."""
    base = draw(arrays_for(shape, kind))
    form = draw(st.sampled_from(["numpy", "numpy", "numpy", "list", "torch", "scalar", "other"]))
    if form == "list":
        out = base.tolist()
        if isinstance(out, list) and len(out) > 1 and draw(st.booleans()) and isinstance(out[0], list) and out[0]:
            out[0] = out[0][:-1]  # ragged
        return out
    if form == "torch" and base.dtype.kind != "U":  # torch holds no strings
        torch = require("torch")
        if base.dtype == np.uint64:
            base = base.astype(np.int64)
        t = torch.from_numpy(np.ascontiguousarray(base))
        tdtype = draw(st.sampled_from([None, torch.bfloat16, torch.float16, torch.int32, torch.bool]))
        if tdtype is not None and not t.is_complex():
            t = t.to(tdtype)
        if draw(st.booleans()) and t.ndim and t.dtype in (torch.float32, torch.float64):
            t = t.to_sparse()
        return t
    if form == "scalar":
        return draw(st.one_of(st.floats(), st.integers(-2**70, 2**70), st.booleans()))
    if form == "other":
        return draw(st.sampled_from([None, "abc", {"a": 1}, object(), [], [[]], (1, 2), np.array(None)]))
    return base


def assert_named(e: BaseException, name: str):
    assert isinstance(e, (ValueError, TypeError)), f"{type(e).__name__} escaped: {e}"
    assert str(e).startswith(f"{name}:"), f"the message does not start with {name!r}: {e}"
    assert "\n" not in str(e), str(e)


KINDS = {"states": "float", "actions": "float", "returns_to_go": "float", "timesteps": "index",
         "attention_mask": "mask"}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["forward", "get_action"]), st.sampled_from(sorted(SHAPES)), st.data())
def test_fuzz_forward_and_get_action_inputs(model, method, name, data):
    """Any value for one argument: it is refused with a ValueError or TypeError that starts with the argument's
    name, or it is a valid input and the actions are finite (a NaN that got through would show there), the mask
    held only 0 and 1, and the timesteps were integers in range."""
    value = data.draw(values_for(name, SHAPES[name], KINDS[name]), label=name)
    try:
        out = to_numpy(call(model, method, {**good(), name: value}))
    except Exception as e:  # noqa: BLE001  (what escapes is the point of the test)
        if name == "states" and "expected shape" in str(e):  # states set B and T: the others are checked against
            name = str(e).partition(":")[0]
            assert name in SHAPES, str(e)
        assert_named(e, name)
        return
    assert np.isfinite(out).all()
    if value is None:  # attention_mask=None: all real
        return
    host = np.asarray(to_numpy(value.float() if str(getattr(value, "dtype", "")) == "torch.bfloat16" else value))
    if name == "attention_mask":
        assert np.isin(host, [0, 1]).all()
    if name == "timesteps":
        assert host.dtype.kind in "iu" and host.min() >= 0 and host.max() < SMALL["max_ep_len"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # huge or NaN gradients overflow: allowed, not refused
@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(GRAD_SHAPES)), st.data())
def test_fuzz_backward_inputs(name, data):
    """The gradients handed to backward: refused by name, or accepted with the right shape (any values: a
    diverging loss hands back NaN, which the trainer's check reports)."""
    m = DecisionTransformerModel(**SMALL, seed=0)
    m(**good())
    value = data.draw(values_for(name, GRAD_SHAPES[name], "float"), label=name)
    grads = {k: np.ones(shape) for k, shape in GRAD_SHAPES.items()}
    try:
        m.backward(**{**grads, name: value})  # None: no gradient for that prediction
    except Exception as e:  # noqa: BLE001
        assert_named(e, name)
        return
    assert all(p.grad is None or p.grad.shape == p.shape for p in m.parameters())
    assert value is None or np.asarray(to_numpy(value.float() if hasattr(value, "float") else value)).shape == \
        GRAD_SHAPES[name]
