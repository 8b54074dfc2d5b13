"""minidt.gradcheck: the two tools every backward pass is checked with."""

from __future__ import annotations

import numpy as np
import pytest

from minidt.gradcheck import numerical_grad, rel_error


def test_rel_error_is_relative_to_the_reference_scale():
    b = np.array([1.0, -4.0, 1e-9])
    assert rel_error(b + np.array([0.0, 0.0, 2e-3]), b) == pytest.approx(5e-4)  # not 2e6 at the tiny entry
    assert rel_error(np.zeros(0), np.zeros(0)) == 0.0


def test_rel_error_of_a_zero_reference_is_measured_against_the_floor():
    """A saturated softmax's numerical gradient is exactly 0 where the analytic one is 4e-13: round-off, not a
    relative error of 4e287 (what dividing by 1e-300 said)."""
    zeros = np.zeros(3)
    assert rel_error(np.array([4e-13, 0.0, -1e-13]), zeros) == pytest.approx(0.4)
    assert rel_error(np.array([4e-13, 0.0, -1e-13]), zeros, floor=1e-3) == pytest.approx(4e-10)
    assert rel_error(zeros, zeros) == 0.0
    assert rel_error(np.array([1.0]), np.array([0.0])) == 1e12  # a real difference still fails
    with pytest.raises(ValueError, match="floor: expected a positive number, got 0"):
        rel_error(zeros, zeros, floor=0)


def test_numerical_grad_restores_its_input_and_spot_checks():
    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    before = x.copy()
    g = numerical_grad(lambda: float(np.sum(x ** 3)), x)
    assert np.array_equal(x, before) and rel_error(g, 3 * x ** 2) < 1e-9
    part = numerical_grad(lambda: float(np.sum(x ** 3)), x, entries=[(0, 1)])
    assert part[0, 1] == pytest.approx(12.0) and np.count_nonzero(part) == 1
