"""The names every promotion module shares: the ``shadow`` alias, the verdicts, the request states, the error."""

from __future__ import annotations

SHADOW = "shadow"
WIN, LOSE, WAIT, INCONCLUSIVE = "win", "lose", "wait", "inconclusive"
OPEN, APPROVED, REJECTED, TIMED_OUT, RETIRED = "open", "approved", "rejected", "timed_out", "retired"
OVERALL = "all"  # the ``slice`` of the whole day's rows in shadow_evaluations


class PromotionError(RuntimeError):
    """A promotion or request that must not happen (the message says why); nothing was promoted."""


def _table(schema: str, name: str) -> str:
    from loopline.db import _IDENTIFIER

    if not _IDENTIFIER.match(schema or ""):
        raise ValueError(f"schema {schema!r} is not a plain identifier")
    return f"{schema}.{name}"
