"""Scores from raw verdicts: pass@k (unbiased estimator) and bootstrap-over-problems CIs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from benchforge.errors import BenchforgeError


@dataclass(frozen=True)
class Estimate:
    value: float
    ci95: tuple[float, float]

    def as_dict(self) -> dict[str, object]:
        return {"value": self.value, "ci95": [self.ci95[0], self.ci95[1]]}


def pass_at_k(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """Chen et al. (2021) unbiased pass@k per problem: 1 - C(n-c, k) / C(n, k)."""
    n = np.asarray(n, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    if k < 1:
        raise BenchforgeError(f"pass@{k}: k must be >= 1")
    if np.any(n < k):
        raise BenchforgeError(
            f"pass@{k} needs at least {k} samples per task, but some tasks have only "
            f"{int(n.min())}; raise model.n_samples or drop k={k} from aggregate.ks"
        )
    out = np.ones(n.shape, dtype=np.float64)
    # Product form of the ratio of binomials; numerically stable for large n.
    for i in np.nonzero(n - c >= k)[0]:
        out[i] = 1.0 - np.prod(1.0 - k / np.arange(n[i] - c[i] + 1, n[i] + 1))
    return out


def bootstrap_ci(per_task: np.ndarray, resamples: int, seed: int,
                 confidence: float) -> tuple[float, float]:
    """Percentile CI of the mean, resampling problems with replacement (seeded, vectorised)."""
    if per_task.size == 0:
        raise BenchforgeError("no tasks to aggregate")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, per_task.size, size=(resamples, per_task.size))
    means = per_task[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def pass_at_k_estimates(verdicts: Mapping[str, Sequence[bool]], ks: Sequence[int],
                        resamples: int, seed: int,
                        confidence: float) -> dict[str, Estimate]:
    """``{"pass@k": Estimate}`` over tasks, from per-task lists of sample verdicts."""
    task_ids = sorted(verdicts)
    n = np.array([len(verdicts[t]) for t in task_ids])
    c = np.array([sum(bool(v) for v in verdicts[t]) for t in task_ids])
    estimates = {}
    for k in sorted(set(ks)):
        per_task = pass_at_k(n, c, k)
        estimates[f"pass@{k}"] = Estimate(
            value=float(per_task.mean()),
            ci95=bootstrap_ci(per_task, resamples, seed, confidence),
        )
    return estimates
