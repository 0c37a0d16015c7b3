"""Promotion on evidence: retraining timed to label maturity, the shadow judged on matured labels, approval.

Three pieces, none of which knows Airflow:

* **Scheduled retrainings.** A pattern drift (a traffic segment grew, the realized performance fell) is learnt
  only from its labels, which mature ``features.label_maturity_days`` after the night. drift_monitor records a
  retraining due on ``ds + label_maturity_days`` (:func:`schedule_retraining`) and fires it on that night
  (:func:`due_retrainings`). A confirmed retraining whose cut-off is past a pending row's due night covers it
  (:func:`settle_covered`): the row is settled ``fired`` with the run that covered it.
* **Shadow evidence.** Under ``promotion.policy: shadow_first`` the gate's winner gets alias ``shadow`` and is
  scored next to the champion. :func:`paired_rows` joins both models' scores of a day with the day's matured
  labels on ``transaction_id`` (the same transactions), :func:`paired_auc_difference` bootstraps the ROC AUC
  difference (``scipy.stats.bootstrap`` with ``paired=True``) and :func:`judge` says ``win``, ``lose`` or
  ``wait`` from the evidence pooled over the days seen so far (``inconclusive`` once
  ``promotion.max_shadow_days`` days brought no verdict).
* **Requests and approval.** A win raises one request per version (:func:`raise_request`); a person approves
  it in Airflow (the ``promote_model`` DAG) and :func:`promote_shadow` moves ``champion`` with the approver,
  the time and the evidence in ``model_alias_history``; a loss or an inconclusive shadow retires the shadow
  (:func:`retire_shadow`, also ``loopline model retire-shadow``), a rejection or a timeout the request
  (:func:`close_request`).

Modules
-------
:mod:`~loopline.promotion.states` (the alias, verdicts, request states and the error),
:mod:`~loopline.promotion.schedule` (scheduled retrainings), :mod:`~loopline.promotion.comparison` (the paired
comparison and the rule), :mod:`~loopline.promotion.approval` (requests, promotion, retirement) and
:mod:`~loopline.promotion.night` (the night's comparison). Their public names are importable from
``loopline.promotion``.
"""

from loopline.evidence import roc_auc
from loopline.promotion.approval import (
    _verify_artifacts,
    check_promotable,
    close_request,
    get_request,
    promote_shadow,
    raise_request,
    request_body,
    retire_shadow,
)
from loopline.promotion.comparison import (
    PairedDifference,
    Verdict,
    evaluated_days,
    judge,
    paired_auc_difference,
    paired_rows,
    slice_differences,
    write_evaluation,
)
from loopline.promotion.night import judge_night, paired_day, training_data_end, training_window
from loopline.promotion.schedule import due_retrainings, schedule_retraining, settle_covered
from loopline.promotion.states import (
    APPROVED,
    INCONCLUSIVE,
    LOSE,
    OPEN,
    OVERALL,
    REJECTED,
    RETIRED,
    SHADOW,
    TIMED_OUT,
    WAIT,
    WIN,
    PromotionError,
)

__all__ = [
    "APPROVED",
    "INCONCLUSIVE",
    "LOSE",
    "OPEN",
    "OVERALL",
    "REJECTED",
    "RETIRED",
    "SHADOW",
    "TIMED_OUT",
    "WAIT",
    "WIN",
    "PairedDifference",
    "PromotionError",
    "Verdict",
    "_verify_artifacts",
    "check_promotable",
    "close_request",
    "due_retrainings",
    "evaluated_days",
    "get_request",
    "judge",
    "judge_night",
    "paired_auc_difference",
    "paired_day",
    "paired_rows",
    "promote_shadow",
    "raise_request",
    "request_body",
    "retire_shadow",
    "roc_auc",
    "schedule_retraining",
    "settle_covered",
    "slice_differences",
    "training_data_end",
    "training_window",
    "write_evaluation",
]
