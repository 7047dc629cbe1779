"""The results of a membership-inference audit: :class:`AttackResult` and :class:`AuditReport`.

Their numbers are NOT differentially private (see :mod:`op_tensorflow.auditing`).
"""

from __future__ import annotations

import dataclasses

__all__ = ["CONFIDENCE", "AttackResult", "AuditReport"]

#: Confidence level of TF Privacy's epsilon lower bounds (``1 - EPSILON_ALPHA`` of its data_structures).
CONFIDENCE = 0.95
_NOT_DP = (
    "NOT differentially private: computed from the raw private rows, for the data owner only; "
    "do not release these numbers as DP answers."
)


@dataclasses.dataclass(frozen=True)
class AttackResult:
    """The outcome of one membership-inference attack.

    Attributes:
        attack_type: ``"threshold"`` or ``"logistic_regression"``.
        auc: Area under the attack's ROC curve (0.5: guessing; 1: perfect).
        advantage: Attacker advantage ``max |TPR - FPR|`` over the ROC curve.
        epsilon_lower_bound: Point estimate of the empirical epsilon lower bound.
        epsilon_lower_bound_ci: TF Privacy's largest epsilon lower bound at the report's
            confidence (``epsilon_lower_bound_value``; for delta = 0), clamped at 0.
    """

    attack_type: str
    auc: float
    advantage: float
    epsilon_lower_bound: float
    epsilon_lower_bound_ci: float


@dataclasses.dataclass(frozen=True)
class AuditReport:
    """The result of :func:`audit`. Its numbers are NOT differentially private.

    Attributes:
        attack_auc: The largest attack AUC over the attacks run.
        attacker_advantage: The largest attacker advantage ``max |TPR - FPR|``.
        empirical_epsilon_lower_bound: The largest point-estimate lower bound on epsilon
            (from the ROC curves, at ``target_delta``; clamped at 0). A point estimate from
            finite samples, not a high-confidence bound: it can exceed the true epsilon by
            chance, most easily with few rows.
        accountant_epsilon: The DP-SGD accountant's epsilon at ``target_delta`` for a
            ``PrivateKerasModel``; None for a plain Keras model (no guarantee).
        target_delta: The delta of both the lower bound and the accountant's epsilon.
        n_train: Number of members (rows of ``train_pdf``).
        n_holdout: Number of non-members (rows of ``holdout_pdf``).
        empirical_epsilon_lower_bound_ci: TF Privacy's high-confidence epsilon lower bound
            (``epsilon_lower_bound_value`` of its attack results: Bailey's 95% bound on the
            TPR/FPR-type ratios, for delta = 0), the largest over thresholds and attacks, clamped
            at 0. Each threshold's bound holds with probability ``confidence``, the maximum over
            thresholds is not corrected for the choice; it treats the examples' attack outcomes
            as independent trials, which they are only approximately (they share one model).
        confidence: The confidence level of ``empirical_epsilon_lower_bound_ci``.
        attacks: One ``AttackResult`` per attack run.
    """

    attack_auc: float
    attacker_advantage: float
    empirical_epsilon_lower_bound: float
    accountant_epsilon: float | None
    target_delta: float
    n_train: int
    n_holdout: int
    empirical_epsilon_lower_bound_ci: float = 0.0
    confidence: float = CONFIDENCE
    attacks: tuple[AttackResult, ...] = ()

    @property
    def consistent(self) -> bool | None:
        """Whether the lower bound is <= the accountant's epsilon (None for a plain Keras model)."""
        if self.accountant_epsilon is None:
            return None
        return self.empirical_epsilon_lower_bound <= self.accountant_epsilon + 1e-9

    def summary(self) -> str:
        """A human-readable account of the audit, stating that it is not a DP result."""
        lines = [
            "Membership-inference audit. " + _NOT_DP,
            f"  members (train): {self.n_train}, non-members (holdout): {self.n_holdout}, "
            f"delta = {self.target_delta:g}",
        ]
        for a in self.attacks:
            lines.append(
                f"  attack {a.attack_type}: AUC {a.auc:.3f}, advantage {a.advantage:.3f}, epsilon lower bound "
                f"{a.epsilon_lower_bound:.3f} ({self.confidence:.0%}: {a.epsilon_lower_bound_ci:.3f})"
            )
        lines += [
            f"  attack AUC (best): {self.attack_auc:.3f}; attacker advantage (best): {self.attacker_advantage:.3f}",
            f"  empirical epsilon lower bound: {self.empirical_epsilon_lower_bound:.3f} (point estimate from "
            f"finite samples, not a high-confidence bound); {self.empirical_epsilon_lower_bound_ci:.3f} at "
            f"{self.confidence:.0%} confidence (TF Privacy's epsilon_lower_bound_value, for delta = 0)",
        ]
        if self.accountant_epsilon is None:
            lines += [
                "  accountant epsilon: none (a plain Keras model has no differential-privacy guarantee)",
                "  consistency: not applicable; the bound above is a lower bound on what this model leaks.",
            ]
            return "\n".join(lines)
        lines.append(f"  accountant epsilon: {self.accountant_epsilon:.3f} (DP-SGD accounting at the same delta)")
        if self.consistent:
            lines.append(
                f"  consistent: the empirical lower bound {self.empirical_epsilon_lower_bound:.3f} <= accountant "
                f"epsilon {self.accountant_epsilon:.3f}. (An attack that finds less than the guarantee does not "
                "prove the guarantee; it only fails to contradict it.)"
            )
        elif self.empirical_epsilon_lower_bound_ci > self.accountant_epsilon:
            lines.append(
                f"  INCONSISTENT: even the {self.confidence:.0%} lower bound "
                f"{self.empirical_epsilon_lower_bound_ci:.3f} exceeds the accountant epsilon "
                f"{self.accountant_epsilon:.3f}: the training, the accounting, or the member/non-member split "
                "(same distribution, disjoint rows) is likely wrong."
            )
        else:
            lines.append(
                f"  INCONSISTENT point estimate: {self.empirical_epsilon_lower_bound:.3f} > accountant epsilon "
                f"{self.accountant_epsilon:.3f}, but the {self.confidence:.0%} bound "
                f"{self.empirical_epsilon_lower_bound_ci:.3f} does not exceed it: likely sampling noise of a "
                "small audit; audit with more rows."
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Every field as plain Python values, plus ``consistent`` and ``differentially_private`` (False)."""
        out = dataclasses.asdict(self)
        out["attacks"] = [dataclasses.asdict(a) for a in self.attacks]
        out["consistent"] = self.consistent
        out["differentially_private"] = False
        return out

    def __str__(self) -> str:
        return self.summary()


AttackResult.__module__ = AuditReport.__module__ = "op_tensorflow.auditing"  # their public home (reprs, pickles)
