"""pass@k matches its combinatorial definition; bootstrap CIs are seeded and sane."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from benchforge.errors import BenchforgeError
from benchforge.stats import (
    bootstrap_ci,
    pass_at_k,
    pass_at_k_estimates,
    require_samples_for_ks,
)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of the n samples that contain at least one correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(5, 0, 1), (5, 2, 1), (5, 2, 3), (6, 1, 5), (7, 7, 2),
                                   (8, 3, 8), (10, 4, 5)])
def test_pass_at_k_is_unbiased_estimator(n: int, c: int, k: int) -> None:
    got = pass_at_k(np.array([n]), np.array([c]), k)[0]
    assert got == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_1_is_mean_correct() -> None:
    got = pass_at_k(np.array([4, 4]), np.array([1, 3]), 1)
    assert got.tolist() == pytest.approx([0.25, 0.75])


def official_cruxeval_pass_at_k(n: int, c: int, k: int) -> float:
    """CRUXEval evaluation/utils_general.py @ 190faf16 ``pass_at_k``, restated."""
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@pytest.mark.parametrize("n,c,k", [(3, 1, 5), (3, 1, 1), (4, 4, 5), (10, 1, 5), (10, 0, 5),
                                   (2, 1, 5), (1, 1, 10), (6, 2, 5)])
def test_pass_at_k_matches_the_official_estimator_also_when_n_lt_k(n: int, c: int,
                                                                   k: int) -> None:
    # n < k arises when CRUXEval's skip rule dropped generations of a task that has a pass
    got = pass_at_k(np.array([n]), np.array([c]), k)[0]
    assert got == pytest.approx(official_cruxeval_pass_at_k(n, c, k), abs=1e-12)
    from evalplus.eval import estimate_pass_at_k

    assert got == pytest.approx(float(estimate_pass_at_k([n], [c], k)[0]), abs=1e-12)


def test_k_greater_than_the_samples_drawn_is_refused() -> None:
    with pytest.raises(BenchforgeError, match=r"pass@5 needs at least 5 samples per task but "
                       r"model\.n_samples is 3"):
        require_samples_for_ks([1, 5], 3, "model.n_samples")
    require_samples_for_ks([1, 5], 5, "model.n_samples")  # enough: no error


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    per_task = np.array([1.0] * 60 + [0.0] * 40)
    a = bootstrap_ci(per_task, 1000, seed=7, confidence=0.95)
    b = bootstrap_ci(per_task, 1000, seed=7, confidence=0.95)
    c = bootstrap_ci(per_task, 1000, seed=8, confidence=0.95)
    assert a == b and a != c
    assert a[0] < 0.6 < a[1]
    # The normal approximation of a proportion's CI: +-1.96 * sqrt(p(1-p)/n) ~ +-0.096.
    assert a[1] - a[0] == pytest.approx(2 * 1.96 * np.sqrt(0.24 / 100), rel=0.15)


def test_estimates_all_correct_has_degenerate_ci() -> None:
    est = pass_at_k_estimates({"a": [True], "b": [True]}, [1], 200, 0, 0.95)
    assert est["pass@1"].value == 1.0 and est["pass@1"].ci == (1.0, 1.0)


def test_estimates_several_k() -> None:
    verdicts = {"a": [True, False, False, False], "b": [False] * 4, "c": [True] * 4}
    est = pass_at_k_estimates(verdicts, [1, 2, 4], 500, 0, 0.95)
    assert est["pass@1"].value == pytest.approx((0.25 + 0 + 1) / 3)
    assert est["pass@2"].value == pytest.approx((0.5 + 0 + 1) / 3)
    assert est["pass@4"].value == pytest.approx(2 / 3)
