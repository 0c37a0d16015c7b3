"""The retraining decision: which drift a night shows and whether to trigger training now."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loopline.drift.reports import DriftResult

__all__ = ["BOTH", "COVARIATE", "PATTERN", "Decision", "drift_kind", "retrain_decision"]


COVARIATE, PATTERN, BOTH = "covariate", "pattern", "both"


@dataclass(frozen=True)
class Decision:
    """Whether to trigger training now, and why (also why not, when a reason was suppressed).

    ``kind`` is the drift seen (:func:`drift_kind`); ``schedule`` says a retraining is wanted once the night's
    labels have matured (a pattern the model cannot learn from today's unlabelled rows); ``due`` names the
    scheduled retrainings (their drift nights) this trigger fires.
    """

    trigger: bool
    reason: str
    drifted_features: list[str] = field(default_factory=list)
    kind: str | None = None
    schedule: bool = False
    due: list[str] = field(default_factory=list)


def drift_kind(result: DriftResult | None, performance_drop: bool) -> str | None:
    """Which drift a night shows: ``covariate`` (the inputs' distributions moved: enough feature, multivariate
    or score signals on their own), ``pattern`` (a traffic segment grew, or the realized performance fell: a
    new way of fraud the model needs labels to learn), ``both``, or None.

    A covariate shift is learnt from the new rows themselves (their features are known tonight); a pattern is
    learnt only from its labels, which mature ``features.label_maturity_days`` later.
    """
    covariate = False
    pattern = bool(performance_drop)
    if result is not None and result.drift:
        own = len(result.drifted_features) + bool(result.multivariate_drifted) + bool(result.score_drifted)
        covariate = own >= result.min_drifted_features
        pattern = pattern or bool(result.drifted_segments)
        if not covariate and not pattern:
            covariate = True  # drift from signals of both kinds together: retrain now, as before
    if covariate and pattern:
        return BOTH
    return COVARIATE if covariate else PATTERN if pattern else None


def retrain_decision(
    result: DriftResult | None,
    performance_drop: bool,
    last_trigger_at: dt.datetime | None,
    now: dt.datetime,
    cooldown_hours: float,
    training_active: bool,
    *,
    defer_pattern: bool = False,
    due: Sequence[str] = (),
    maturity_note: str = "",
    last_due_trigger_at: dt.datetime | None = None,
) -> Decision:
    """Pure decision: trigger on data drift (``result.drift``) or a realized performance drop, unless a training
    run is already running or queued, or the last trigger is less than ``cooldown_hours`` before ``now``.

    With ``defer_pattern`` a pattern drift (:func:`drift_kind`) does not trigger now: the decision asks for a
    retraining once the labels matured (``schedule``; ``maturity_note`` says when), and a covariate shift of the
    same night still triggers now. ``due`` lists scheduled retrainings whose time has come: they trigger too.
    A due retraining is held by the cooldown of ``last_due_trigger_at`` (the last trigger that fired scheduled
    retrainings) only: an immediate retraining since then trained before these labels existed, so it cannot
    stand in for the one at label maturity (when a night is both kinds, both retrainings happen).

    Datetimes must both be timezone-aware (or both naive). A trigger time in the future counts as inside the
    cooldown.
    """
    drifted = []
    if result is not None:
        drifted = [*result.drifted_features, *(f"segment:{name}" for name in result.drifted_segments)]
    kind = drift_kind(result, performance_drop)
    # A grown segment is learnt from labels that mature later; a performance drop is measured on a day whose
    # labels have just matured, so it is learnt now.
    schedule = bool(defer_pattern and result is not None and result.drift and result.drifted_segments)
    covariate_now = result is not None and result.drift and (not schedule or kind == BOTH)
    reasons = []
    if covariate_now:
        reasons.append(f"data drift ({result.summary()})")
    if performance_drop:
        reasons.append("realized performance dropped")
    if due:
        reasons.append(f"scheduled retraining due (pattern drift of {', '.join(due)}: its labels have matured)")
    later = ""
    if schedule:
        grown = ", ".join(result.drifted_segments)
        later = f"pattern drift (segment(s) grown: {grown}): retraining scheduled {maturity_note}".rstrip()
    if not reasons:
        if schedule:
            return Decision(False, f"no trigger now: {later}", drifted, kind, schedule)
        why = result.summary() if result is not None else "no drift result"
        return Decision(False, f"no trigger: {why}; no performance drop", drifted, kind)
    wanted = " and ".join(reasons) + (f"; {later}" if later else "")
    suppressed = []
    if training_active:
        suppressed.append("a training run is already running or queued")
    cooling = _cooldown(last_trigger_at, now, cooldown_hours, "last_trigger_at")
    if cooling and due:
        due_cooling = _cooldown(last_due_trigger_at, now, cooldown_hours, "last_due_trigger_at")
        if not due_cooling:
            # Only the due retrainings may fire through this cooldown: tonight's other reasons wait for it.
            wanted = (
                f"scheduled retraining due (pattern drift of {', '.join(due)}: its labels have matured; the "
                "cooldown of the last trigger does not hold it: that retraining ran before these labels matured)"
                + (f"; {later}" if later else "")
            )
            cooling = ""
        elif due_cooling != cooling:
            cooling += f"; the scheduled retraining(s) due wait for the last one that fired such: {due_cooling}"
    if cooling:
        suppressed.append(cooling)
    if suppressed:
        reason = f"suppressed ({'; '.join(suppressed)}); would trigger for {wanted}"
        return Decision(False, reason, drifted, kind, schedule)
    return Decision(True, wanted, drifted, kind, schedule, list(due))


def _cooldown(last: dt.datetime | None, now: dt.datetime, hours: float, name: str) -> str:
    """Why the cooldown of a trigger at ``last`` (the argument ``name``) holds at ``now`` (empty when it does
    not)."""
    if last is None or hours <= 0:
        return ""
    if (last.tzinfo is None) != (now.tzinfo is None):
        raise ValueError(f"{name} and now must both be timezone-aware or both naive")
    until = last + dt.timedelta(hours=hours)
    if now >= until:
        return ""
    return f"cooldown: last trigger at {last.isoformat()}, no new trigger before {until.isoformat()} ({hours:g} h)"
