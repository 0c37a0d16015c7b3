"""Synthetic landing zone for card-transaction fraud.

:func:`generate` writes what an upstream payments system would drop into the landing zone, one folder per
day and dataset::

    out/transactions/ds=2026-01-05/part-00000.csv[.gz]   transactions that happened on that day
    out/transactions/ds=2026-01-05/_SUCCESS
    out/labels/ds=2026-01-05/part-00000.csv[.gz]         fraud/legit verdicts reported on that day
    out/labels/ds=2026-01-05/_SUCCESS

and, outside the landing zone, the ground truth a benchmark needs (the exact fraud probability each row was
drawn with, so the best achievable AUC is known)::

    truth/ds=2026-01-05/part-00000.csv[.gz]

The world is a fixed population of customers (home country, typical amount, usual merchants, active hours,
online habit, activity rate) and merchants (category, channel, country, risk), both derived from ``seed``
and the population size only. Every day is simulated from its own RNGs seeded with
``(seed, stream, date.toordinal())``, so a day's rows do not depend on the window it is generated in, days
before ``drift_start`` are identical to a run without drift, and output is byte-for-byte reproducible.

Fraud is ``Bernoulli(p)`` with ``p`` a logistic function of interpretable signals: night-time, amount far
above the customer's typical amount, a merchant outside the customer's usual set, a foreign merchant,
card-not-present, category and merchant risk, plus a latent "compromised card" episode that produces a
quick burst of extra transactions (visible as velocity). Times are written in UTC; the population is
European, and the generator treats the UTC hour as the local hour so "night" is learnable from
``event_time`` alone.

Labels arrive 1-30 days after the transaction (fraud sooner, within 20 days). Only labels reported inside
the generated window are written. Memory stays bounded: a day is generated, written and dropped; only the
label report times and verdicts of the last 30 days are kept (9 bytes a row), and their transaction ids are
regenerated from the per-day id stream when the labels are due.

Modules
-------
:mod:`~loopline.synth.params` (the market, the fraud mechanism's weights, the RNG streams),
:mod:`~loopline.synth.world` (the population), :mod:`~loopline.synth.simulate` (one day's rows),
:mod:`~loopline.synth.output` (ids, CSV text, partitions) and :mod:`~loopline.synth.generator`
(:func:`generate`). Their public names are importable from ``loopline.synth``.
"""

from loopline.schemas import LABEL_COLUMNS, TRANSACTION_COLUMNS
from loopline.synth.generator import GenerateSummary, generate
from loopline.synth.params import (
    CATEGORIES,
    CHANNELS,
    COUNTRIES,
    CURRENCIES,
    DRIFT_KINDS,
    FOREIGN_COUNTRIES,
    HOME_COUNTRIES,
    MAX_FRAUD_LABEL_DELAY_DAYS,
    MAX_LABEL_DELAY_DAYS,
    TRUTH_COLUMNS,
)

__all__ = [
    "CATEGORIES",
    "CHANNELS",
    "COUNTRIES",
    "CURRENCIES",
    "DRIFT_KINDS",
    "FOREIGN_COUNTRIES",
    "HOME_COUNTRIES",
    "LABEL_COLUMNS",
    "MAX_FRAUD_LABEL_DELAY_DAYS",
    "MAX_LABEL_DELAY_DAYS",
    "TRANSACTION_COLUMNS",
    "TRUTH_COLUMNS",
    "GenerateSummary",
    "generate",
]
