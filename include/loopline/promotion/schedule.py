"""Scheduled retrainings: a pattern drift's retraining, due when its labels matured (``scheduled_retrainings``).

drift_monitor records one per model and drift night (:func:`schedule_retraining`), fires the due ones
(:func:`due_retrainings`) and settles those a confirmed retraining covered (:func:`settle_covered`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from loopline.promotion.states import _table


def schedule_retraining(
    cur: Any, schema: str, *, model_name: str, drift_ds: dt.date, due_on: dt.date, reason: str
) -> int:
    """Record (idempotently per model and night) a retraining due on ``due_on``; returns its id.

    Runs on the caller's cursor, inside its transaction (drift_monitor's per-model decision lock).
    """
    table = _table(schema, "scheduled_retrainings")
    cur.execute(
        f"""INSERT INTO {table} (model_name, drift_ds, due_on, reason) VALUES (%s, %s, %s, %s)
        ON CONFLICT (model_name, drift_ds) DO UPDATE SET due_on = EXCLUDED.due_on, reason = EXCLUDED.reason
        RETURNING id""",  # noqa: S608 - validated identifier
        (model_name, drift_ds, due_on, reason),
    )
    return int(cur.fetchone()[0])


def due_retrainings(cur: Any, schema: str, *, model_name: str, ds: dt.date) -> list[dt.date]:
    """The drift nights of the model's pending retrainings due on or before ``ds`` (oldest first)."""
    cur.execute(
        f"""SELECT drift_ds FROM {_table(schema, "scheduled_retrainings")}
        WHERE model_name = %s AND state = 'pending' AND due_on <= %s ORDER BY drift_ds""",  # noqa: S608
        (model_name, ds),
    )
    return [row[0] for row in cur.fetchall()]


def settle_covered(cur: Any, schema: str, *, model_name: str, ds: dt.date, train_run_id: str) -> int:
    """A retraining of night ``ds`` (cut-off ``ds + 1``) was confirmed: every pending row due by ``ds`` has its
    matured labels in that training, so it is ``fired``, settled by ``train_run_id``. Returns the rows settled."""
    cur.execute(
        f"""UPDATE {_table(schema, "scheduled_retrainings")}
        SET state = 'fired', settled_at = now(), settled_by = %s,
            note = CASE WHEN due_on = %s THEN 'fired on its night' ELSE 'covered by a later retraining' END
        WHERE model_name = %s AND state = 'pending' AND due_on <= %s""",  # noqa: S608
        (train_run_id, ds, model_name, ds),
    )
    return cur.rowcount
