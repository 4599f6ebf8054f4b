"""S6 promotion: when a fine-tuned SLM may take a task's calls from the LLM.

A candidate is promoted when all of these hold on the cluster's held-out test split
(defaults in `PromotionConfig`):

1. it was scored on at least `min_test_calls` calls;
2. its agreement with the teacher (the task's main metric, counted call by call: name and
   arguments for tool calls, the object for JSON, token F1 >= 0.8 for free text) is at least
   `threshold` (0.95);
3. the Wilson lower bound of that agreement at `confidence` (95 %) is at least `min_lower_bound`
   (0.80): 20 of 20 right passes (0.84), 19 of 20 does not (0.76), 29 of 30 does (0.83);
4. it beats the current champion on the same calls (a tie keeps the champion: no churn).

`decide` returns the verdict with every reason, for the asset check and the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist


@dataclass(frozen=True)
class PromotionConfig:
    threshold: float = 0.95
    min_test_calls: int = 20
    confidence: float = 0.95
    min_lower_bound: float = 0.80


def wilson_lower_bound(successes: int, trials: int, confidence: float = 0.95) -> float:
    """The lower end of the Wilson score interval for a binomial proportion (two-sided)."""
    if trials <= 0:
        return 0.0
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = p + z * z / (2 * trials)
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, (centre - margin) / denominator)


@dataclass(frozen=True)
class Score:
    """A model's agreement on the test split: `agreements` of `calls`."""

    model: str
    agreements: int
    calls: int

    @property
    def rate(self) -> float:
        return self.agreements / self.calls if self.calls else 0.0


@dataclass
class Decision:
    promote: bool
    candidate: str | None
    lower_bound: float | None = None
    reasons: list[str] = field(default_factory=list)  # why not (empty when promoted), or why yes

    def summary(self) -> str:
        return "; ".join(self.reasons)


def decide(candidate: Score | None, champion: Score | None, config: PromotionConfig = PromotionConfig()
           ) -> Decision:
    """Whether `candidate` replaces `champion` (None: the cluster has none yet)."""
    if candidate is None:
        return Decision(False, None, reasons=["no fine-tuned candidate finished training"])
    bound = wilson_lower_bound(candidate.agreements, candidate.calls, config.confidence)
    why_not = []
    if candidate.calls < config.min_test_calls:
        why_not.append(f"only {candidate.calls} test calls, fewer than min_test_calls={config.min_test_calls}")
    if candidate.rate < config.threshold:
        why_not.append(f"agreement {candidate.rate:.3f} ({candidate.agreements}/{candidate.calls}) is below "
                       f"the threshold {config.threshold}")
    if bound < config.min_lower_bound:
        why_not.append(f"the {config.confidence:.0%} Wilson lower bound {bound:.3f} is below {config.min_lower_bound}")
    if champion is not None and champion.model != candidate.model and candidate.rate <= champion.rate:
        why_not.append(f"it does not beat the champion {champion.model} ({candidate.rate:.3f} <= {champion.rate:.3f})")
    if why_not:
        return Decision(False, candidate.model, bound, why_not)
    against = f", beating {champion.model} ({champion.rate:.3f})" if champion is not None else ""
    return Decision(True, candidate.model, bound, [
        f"agreement {candidate.rate:.3f} ({candidate.agreements}/{candidate.calls}), Wilson lower bound "
        f"{bound:.3f}{against}"])
