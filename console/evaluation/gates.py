"""The promotion gate: the registry calls `check_promotion` before it moves an alias (see
console.registry.models.PROMOTION_CHECKS). A gate compares the candidate's stored result with the
result of the version the alias points at now; a failing gate refuses with the numbers, unless an
admin overrides it with a reason, which is recorded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from console.accounts.choices import Role
from console.audit.models import record
from console.evaluation.choices import METRICS, plain
from console.evaluation.models import EvaluationResult, PromotionGate
from console.registry.models import Alias, Model, ModelVersion, PromotionRefused


@dataclass(slots=True)
class Verdict:
    gate: PromotionGate
    passed: bool
    message: str
    candidate: float | None = None
    baseline: float | None = None
    baseline_version: int | None = None
    dataset_version: int | None = None
    regression_pct: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"gate": str(self.gate), "passed": self.passed, "message": self.message, "candidate": self.candidate,
                "baseline": self.baseline, "baseline_version": self.baseline_version,
                "dataset_version": self.dataset_version, "regression_pct": self.regression_pct}


def _results(version: ModelVersion, gate: PromotionGate) -> dict[int, float]:
    """Dataset version number → the metric's value, for this version under the gate's config."""
    rows = EvaluationResult.objects.filter(version=version, dataset_version__dataset=gate.dataset,
                                           config_key=gate.config_key).select_related("dataset_version")
    return {r.dataset_version.number: r.metrics[gate.metric] for r in rows
            if isinstance(r.metrics.get(gate.metric), int | float)}


def verdict(gate: PromotionGate, version: ModelVersion) -> Verdict:
    current = Alias.objects.filter(model_id=gate.model_id, name=gate.alias).select_related("version").first()
    if current is None or current.version_id == version.pk:
        return Verdict(gate, True, f"'{gate.alias}' points at no other version; nothing to compare.")
    baseline = current.version
    name, label = gate.dataset.name, str(METRICS[gate.metric].label).lower()
    mine, theirs = _results(version, gate), _results(baseline, gate)
    common = sorted(set(mine) & set(theirs))
    if not common:
        missing = [f"v{v.number}" for v, r in ((version, mine), (baseline, theirs)) if not r]
        lacking = " and ".join(missing) if missing else f"v{version.number} and v{baseline.number} on one dataset version"
        return Verdict(gate, False, f"The gate needs the {label} of v{version.number} and of {gate.alias}'s "
                                    f"v{baseline.number} on dataset '{name}' under the same config; {lacking} "
                                    f"lack it. Evaluate both on '{name}' first.")
    number = common[-1]
    cand, base = float(mine[number]), float(theirs[number])
    lower_better = METRICS[gate.metric].lower_is_better
    change = (cand - base) / abs(base) * 100 if base else (0.0 if cand == base else float("inf"))
    regression = change if lower_better else -change
    passed = regression <= gate.max_regression_pct
    how = (f"{abs(regression):.2f} % worse than" if regression > 0 else
           f"{abs(regression):.2f} % better than" if regression < 0 else "the same as")
    message = (f"The {label} of v{version.number} on '{name}' v{number} is {plain(cand)}, {how} {gate.alias}'s "
               f"v{baseline.number} ({plain(base)}); the gate allows at most {plain(gate.max_regression_pct)} % worse.")
    return Verdict(gate, passed, message, cand, base, baseline.number, number, regression)


def verdicts(model: Model, alias: str, version: ModelVersion) -> list[Verdict]:
    gates = PromotionGate.objects.filter(model=model, alias=alias).select_related("dataset", "model")
    return [verdict(gate, version) for gate in gates]


def check_promotion(model: Model, alias: str, version: ModelVersion, actor: Any, override_reason: str = "") -> None:
    """Raise PromotionRefused when a gate on `alias` fails, unless an admin overrides it with a
    reason (recorded in the audit log with the numbers)."""
    failed = [v for v in verdicts(model, alias, version) if not v.passed]
    if not failed:
        return
    numbers = " ".join(v.message for v in failed)
    reason = (override_reason or "").strip()
    if not reason:
        raise PromotionRefused(f"Promotion gate failed: {numbers} An admin can override the gate with a reason.")
    if not (getattr(actor, "is_authenticated", False) and actor.has_role(Role.ADMIN)):
        raise PromotionRefused(f"Promotion gate failed: {numbers} Only an admin can override the gate.")
    record(actor, "gate.override", version, model_name=model.name, alias=alias, version=version.number,
           reason=reason, failed=[v.as_dict() for v in failed])
