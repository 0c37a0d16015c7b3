"""Great Expectations gates: the data-quality checks between Loopline's pipeline stages.

A *gate* validates one DataFrame (Spark, Spark Connect or pandas) against one expectation suite stored as
JSON in ``include/gx/<suite>.json`` and answers with a :class:`GateResult`; :func:`check_gate` raises
:class:`GateFailed` when any expectation fails, with a message that names each failed expectation, its
column, what was observed and where the rendered report (GX Data Docs) lies.

Suites are static files. Values that depend on the day or the deployment are *suite parameters*, written in
GX's own syntax ``{"$PARAMETER": "name"}``; :func:`load_suite` substitutes them from :func:`default_params`
(column lists from :mod:`loopline.schemas`, channels, currencies, countries and limits from the
``reference`` config section, thresholds from the ``validation`` section) overlaid with the caller's
``params``. A parameter the suite needs but nobody supplies is an error naming it, never a silently skipped
check. ``for_each`` repeats an expectation per item of a list parameter (the window columns); ``when`` leaves
one out while its parameter is null (``reference.countries: null``).

Each gate runs in its own ephemeral (in-memory) GX context: no ``great_expectations.yml``, nothing shared
between runs. Great Expectations is imported inside the functions that need it (it takes seconds to
import), so importing this module stays cheap for DAG files; this module never imports Airflow.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopline import schemas
from loopline.package_data import package_path

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )

__all__ = [
    "GX_DIR",
    "FailedExpectation",
    "GateFailed",
    "GateResult",
    "check_gate",
    "default_params",
    "load_suite",
    "report_folder",
    "row_count_bounds",
    "run_gate",
    "suite_names",
]

GX_DIR = package_path("gx")
PARAMETER_KEY = "$PARAMETER"
FOR_EACH = "for_each"
WHEN = "when"
# Sanity bounds on the daily mean of amount_eur for the features suite; callers usually pass tighter ones.
DEFAULT_AMOUNT_MEAN_BOUNDS = (1.0, 5_000.0)
# GX reports at most this many example values per failed expectation ("SUMMARY" result format).
_EXAMPLES = 5
_RESULT_FORMAT = "SUMMARY"
_SITE_NAME = "loopline"
_DATASOURCE = "loopline"
_PATH_SAFE = re.compile(r"^[A-Za-z0-9_.:+-]+$")


# ---------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class FailedExpectation:
    """One expectation that did not hold.

    ``expectation`` is the GX expectation type, ``column`` the column it checks (``None`` for table-level
    expectations), ``unexpected_count`` the number of offending rows for row-wise expectations (``None``
    for aggregates such as row counts or means), ``observed`` GX's observed value where it reports one, and
    ``detail`` a short human-readable explanation.
    """

    expectation: str
    column: str | None
    unexpected_count: int | None
    observed: Any
    detail: str

    def describe(self) -> str:
        """``expect_x(column): detail`` — the line :meth:`GateResult.summary` prints."""
        target = f"({self.column})" if self.column else ""
        return f"{self.expectation}{target}: {self.detail}"


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate: suite, verdict, how many expectations ran, which failed, the report."""

    suite: str
    success: bool
    evaluated: int
    failed: tuple[FailedExpectation, ...]
    report_uri: str | None
    ds: str | None = None
    seconds: float = field(default=0.0, compare=False)

    def summary(self) -> str:
        """One line per failed expectation, e.g. ``expect_column_values_to_not_be_null(transaction_id): 3
        unexpected``; an empty string when the gate passed."""
        return "\n".join(item.describe() for item in self.failed)

    def failed_expectations(self) -> set[str]:
        """The failed expectation types (handy in tests and alerts)."""
        return {item.expectation for item in self.failed}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (XCom, logs); observed values JSON cannot hold become strings."""
        return json.loads(json.dumps(asdict(self), default=str))


class GateFailed(RuntimeError):
    """A gate found data that breaks its suite. ``result`` holds the full :class:`GateResult`."""

    def __init__(self, result: GateResult) -> None:
        self.result = result
        where = f" for ds={result.ds}" if result.ds else ""
        lines = [
            f"GX gate '{result.suite}' failed{where}: {len(result.failed)} of {result.evaluated} expectations failed:"
        ]
        lines += [f"  - {item.describe()}" for item in result.failed]
        if result.report_uri:
            lines.append(f"Validation report: {result.report_uri}")
        else:
            lines.append("Validation report: not rendered (run_gate was called without report_dir)")
        super().__init__("\n".join(lines))

    def __reduce__(self):  # keep the exception picklable (multiprocessing, Airflow's task runner)
        return (type(self), (self.result,))


# ---------------------------------------------------------------------------------------------------------
# Suites and parameters


def suite_names() -> list[str]:
    """The suites shipped in ``include/gx`` (file stems)."""
    return sorted(path.stem for path in GX_DIR.glob("*.json"))


def default_params() -> dict[str, Any]:
    """Suite parameters every gate gets unless the caller overrides them.

    Column lists come from :mod:`loopline.schemas` (the feature columns from ``features.windows``), reference
    data (channels, currencies, countries, the amount limit) from ``get_config().reference``, thresholds from
    ``get_config().validation``;
    ``max_rows`` defaults to ``None`` (no upper bound) and the features suite's amount-mean bounds to
    :data:`DEFAULT_AMOUNT_MEAN_BOUNDS`.
    """
    from loopline.config import get_config

    cfg = get_config()
    validation = cfg.validation
    features = schemas.feature_schema(cfg.features.windows)
    return {
        "raw_transaction_columns": sorted(schemas.RAW_TRANSACTION_TYPES),
        "raw_label_columns": sorted(schemas.RAW_LABEL_TYPES),
        "feature_columns": list(features.columns),
        # the columns named from features.windows (expanded by "for_each" expectations)
        "window_columns": [*features.count_columns, *features.sum_columns],
        "window_count_columns": list(features.count_columns),
        "window_sum_columns": list(features.sum_columns),
        "average_columns": list(features.average_columns[:2]),  # the z-score may be null or negative
        "channels": list(cfg.reference.channels),
        "currencies": sorted(cfg.reference.currencies),
        "countries": list(cfg.reference.countries) if cfg.reference.countries is not None else None,
        "max_amount_eur": cfg.reference.max_amount_eur,
        "min_rows": validation.min_rows,
        "max_rows": None,
        "max_quarantine_rate": validation.max_quarantine_rate,
        "amount_mean_min": DEFAULT_AMOUNT_MEAN_BOUNDS[0],
        "amount_mean_max": DEFAULT_AMOUNT_MEAN_BOUNDS[1],
    }


def _suite_path(name: str) -> Path:
    path = GX_DIR / f"{name}.json"
    if not _PATH_SAFE.match(name) or not path.is_file():
        raise ValueError(f"unknown GX suite {name!r}: no file {path} (known suites: {suite_names()})")
    return path


def _is_parameter(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {PARAMETER_KEY}


def _find_parameters(node: Any) -> set[str]:
    if _is_parameter(node):
        return {node[PARAMETER_KEY]}
    if isinstance(node, dict):
        return set().union(*(_find_parameters(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_find_parameters(value) for value in node))
    return set()


def _substitute(node: Any, values: Mapping[str, Any]) -> Any:
    if _is_parameter(node):
        return values[node[PARAMETER_KEY]]
    if isinstance(node, dict):
        return {key: _substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(value, values) for value in node]
    return node


def _needed(expectations: list[Any]) -> set[str]:
    """Parameters of a suite's expectations: ``$PARAMETER`` names, ``for_each`` lists (an expectation with
    ``"for_each": "<list parameter>"`` is repeated for each item, its ``{"$PARAMETER": "for_each"}`` the item)
    and ``when`` switches (an expectation with ``"when": "<parameter>"`` is left out while it is null)."""
    names = _find_parameters(expectations) - {FOR_EACH}
    for key in (FOR_EACH, WHEN):
        names |= {spec[key] for spec in expectations if isinstance(spec, dict) and key in spec}
    return names


def _expand(expectations: list[Any], values: Mapping[str, Any]) -> list[Any]:
    out = []
    for spec in expectations:
        if isinstance(spec, dict) and WHEN in spec:
            if values[spec[WHEN]] is None:
                continue  # the optional check is off (its parameter is null)
            spec = {key: value for key, value in spec.items() if key != WHEN}
        if isinstance(spec, dict) and FOR_EACH in spec:
            template = {key: value for key, value in spec.items() if key != FOR_EACH}
            out += [_substitute(template, {**values, FOR_EACH: item}) for item in values[spec[FOR_EACH]]]
        else:
            out.append(_substitute(spec, values))
    return out


def _resolved_expectations(name: str, params: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    path = _suite_path(name)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"GX suite file {path} is not valid JSON: {exc}") from exc
    expectations = document.get("expectations")
    if not isinstance(expectations, list) or not expectations:
        raise ValueError(f"GX suite file {path} has no 'expectations' list")
    values = {**default_params(), **(params or {})}
    missing = sorted(_needed(expectations) - set(values))
    if missing:
        raise ValueError(f"GX suite {name!r} needs parameters {missing}; pass them in params")
    return _expand(expectations, values)


def load_suite(name: str, params: dict[str, Any] | None = None) -> gx.ExpectationSuite:
    """Read ``include/gx/<name>.json`` and return a GX ``ExpectationSuite`` with its parameters substituted.

    ``params`` override :func:`default_params`. Raises ``ValueError`` for an unknown suite, a missing
    parameter, or an expectation GX rejects (GX itself would only log and drop such an expectation).
    """
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    built = []
    for index, spec in enumerate(_resolved_expectations(name, params)):
        try:
            built.append(
                ExpectationConfiguration(
                    type=spec["type"],
                    kwargs=spec.get("kwargs", {}),
                    meta=spec.get("meta"),
                    notes=spec.get("notes"),
                ).to_domain_obj()
            )
        except Exception as exc:  # GX raises several unrelated types for a bad configuration
            raise ValueError(f"GX suite {name!r}, expectation #{index} ({spec.get('type')}): {exc}") from exc
    return gx.ExpectationSuite(name=name, expectations=built)


# ---------------------------------------------------------------------------------------------------------
# Running a gate


def _is_pandas(df: Any) -> bool:
    import pandas as pd

    return isinstance(df, pd.DataFrame)


def _is_spark(df: Any) -> bool:
    kind = type(df)
    return kind.__name__ == "DataFrame" and kind.__module__.startswith("pyspark.sql")


def _context(site_dir: Path | None):
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if site_dir is not None:
        sites[_SITE_NAME] = {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _bounds(kwargs: Mapping[str, Any]) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    low_op = ">" if kwargs.get("strict_min") else ">="
    high_op = "<" if kwargs.get("strict_max") else "<="
    parts = []
    if low is not None:
        parts.append(f"{low_op} {_number(low)}")
    if high is not None:
        parts.append(f"{high_op} {_number(high)}")
    return " and ".join(parts) or "any value"


def _exception_message(info: Mapping[str, Any] | None) -> str | None:
    """The first error message in GX's ``exception_info``: flat, or keyed by metric when a metric failed."""
    if not info:
        return None
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, Mapping)]
    for entry in entries:
        if entry.get("raised_exception"):
            message = str(entry.get("exception_message") or "unknown error").strip()
            return message.splitlines()[0] if message else "unknown error"
    return None


def _describe_failure(item: ExpectationValidationResult) -> FailedExpectation:
    config = item.expectation_config
    kwargs = dict(config.kwargs)
    result = dict(item.result or {})
    error = _exception_message(item.exception_info)
    column = kwargs.get("column")
    unexpected = result.get("unexpected_count")
    observed = result.get("observed_value")
    if error is not None:
        detail = f"could not be evaluated: {error}"
    elif config.type == "expect_table_columns_to_match_set":
        mismatch = (result.get("details") or {}).get("mismatched") or {}
        parts = []
        if mismatch.get("missing"):
            parts.append(f"missing columns {sorted(mismatch['missing'])}")
        if mismatch.get("unexpected"):
            parts.append(f"unexpected columns {sorted(mismatch['unexpected'])}")
        detail = "; ".join(parts) or f"columns {observed} do not match {kwargs.get('column_set')}"
    elif unexpected is not None:
        total = result.get("element_count")
        share = f" of {total} rows" if total else ""
        examples = [value for value in result.get("partial_unexpected_list") or [] if value is not None]
        shown = f", e.g. {examples[:_EXAMPLES]}" if examples else ""
        detail = f"{unexpected} unexpected{share}{shown}"
        mostly = kwargs.get("mostly")
        if mostly is not None:
            detail += f" (mostly={mostly:g}: at least {mostly:.0%} of the rows must pass)"
    elif "min_value" in kwargs or "max_value" in kwargs:
        detail = f"observed {_number(observed)}, expected {_bounds(kwargs)}"
    elif "value" in kwargs:
        detail = f"observed {_number(observed)}, expected {_number(kwargs['value'])}"
    else:
        detail = f"observed {observed!r}"
    return FailedExpectation(
        expectation=config.type,
        column=column,
        unexpected_count=unexpected,
        observed=observed,
        detail=detail,
    )


def report_folder(report_dir: Path, suite: str, ds: str) -> Path:
    """The folder of one gate's Data Docs, ``<report_dir>/<suite>/ds=<ds>``: a whole site (index, pages, assets),
    so it can be published on its own (``loopline.orchestration.reports``)."""
    if not _PATH_SAFE.match(ds):
        raise ValueError(f"ds {ds!r} cannot name a report folder (letters, digits and _ . : + - only)")
    return Path(report_dir).resolve() / suite / f"ds={ds}"


_compiled_templates: dict[str, bytes] = {}


def _share_compiled_templates() -> None:
    """Let every Data Docs view of this process reuse the templates it compiled.

    GX builds a new Jinja environment for each view of each report, without a cache, so most of a gate's time
    went into compiling the same templates again. A bytecode cache shared by those environments keeps what was
    compiled; the templates are GX's own files, so their compiled form never changes within a process.
    """
    import jinja2
    from great_expectations.render.view.view import DefaultJinjaView

    if getattr(DefaultJinjaView, "_loopline_shared_cache", False):
        return

    class SharedCache(jinja2.BytecodeCache):
        def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            if bucket.key in _compiled_templates:
                bucket.bytecode_from_string(_compiled_templates[bucket.key])

        def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            _compiled_templates[bucket.key] = bucket.bytecode_to_string()

    cache = SharedCache()
    original = DefaultJinjaView.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.env.bytecode_cache = cache

    DefaultJinjaView.__init__ = init  # type: ignore[method-assign]
    DefaultJinjaView._loopline_shared_cache = True  # type: ignore[attr-defined]


def _render_report(context: Any, validation: ExpectationSuiteValidationResult, run_id: Any) -> str:
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    _share_compiled_templates()
    built = context.build_data_docs(site_names=[_SITE_NAME])
    index = built[_SITE_NAME]
    batch_ids = {item.expectation_config.kwargs.get("batch_id") for item in validation.results}
    batch_ids.discard(None)
    if len(batch_ids) != 1:
        return index
    identifier = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=validation.suite_name),
        run_id=run_id,
        batch_identifier=batch_ids.pop(),
    )
    urls = context.get_docs_sites_urls(resource_identifier=identifier, site_name=_SITE_NAME)
    return (urls[0].get("site_url") if urls else None) or index


def run_gate(
    df: Any,
    suite: str,
    *,
    ds: str,
    params: dict[str, Any] | None = None,
    report_dir: Path | None = None,
    persist: bool = True,
) -> GateResult:
    """Validate ``df`` against suite ``suite`` and return the :class:`GateResult` (never raises on bad data).

    ``df`` is a Spark DataFrame (classic or Spark Connect) or a pandas DataFrame; the whole frame is one
    batch. ``ds`` names the day (shown in messages and in the report path). ``params`` override
    :func:`default_params`. With ``report_dir`` (a local folder), Data Docs are rendered into
    ``<report_dir>/<suite>/ds=<ds>/`` and ``report_uri`` is the ``file://`` URL of this run's validation
    page; upload that folder (:func:`report_folder`) yourself if reports live on object storage.

    A Spark frame is persisted for the duration of the gate (GX scans it once per metric batch) and
    unpersisted afterwards, unless it was already cached or ``persist=False``. Errors that are not about
    the data (Spark unreachable, unknown suite, missing parameter) raise as usual.
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    started = time.monotonic()
    expectation_suite = load_suite(suite, params)
    site_dir = report_folder(report_dir, suite, ds) if report_dir is not None else None
    context = _context(site_dir)
    if _is_pandas(df):
        source = context.data_sources.add_pandas(name=_DATASOURCE)
        persisted = None
    elif _is_spark(df):
        source = context.data_sources.add_spark(name=_DATASOURCE)
        persisted = None if not persist or df.is_cached else df.persist()
    else:
        kind = f"{type(df).__module__}.{type(df).__name__}"
        raise TypeError(f"run_gate needs a pandas or Spark DataFrame, got {kind}")
    try:
        batch = source.add_dataframe_asset(name=suite).add_batch_definition_whole_dataframe(name="whole")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite, data=batch, suite=context.suites.add(expectation_suite))
        )
        # An explicit run_time: given only a run name, GX parses a date-like name ("2026-01-05") as the time.
        run_id = RunIdentifier(run_name=ds, run_time=dt.datetime.now(dt.UTC))
        validation = definition.run(batch_parameters={"dataframe": df}, result_format=_RESULT_FORMAT, run_id=run_id)
    finally:
        if persisted is not None:
            persisted.unpersist()
    report_uri = None
    if site_dir is not None:
        site_dir.mkdir(parents=True, exist_ok=True)
        report_uri = _render_report(context, validation, run_id)
    # The column-set check first: a wrong schema explains most of the failures after it.
    failures = sorted(
        (item for item in validation.results if not item.success),
        key=lambda item: item.expectation_config.type != "expect_table_columns_to_match_set",
    )
    failed = tuple(_describe_failure(item) for item in failures)
    return GateResult(
        suite=suite,
        success=bool(validation.success),
        evaluated=len(validation.results),
        failed=failed,
        report_uri=report_uri,
        ds=ds,
        seconds=round(time.monotonic() - started, 3),
    )


def check_gate(
    df: Any,
    suite: str,
    *,
    ds: str,
    params: dict[str, Any] | None = None,
    report_dir: Path | None = None,
    persist: bool = True,
) -> GateResult:
    """:func:`run_gate`, raising :class:`GateFailed` when any expectation fails; returns a passing result."""
    result = run_gate(df, suite, ds=ds, params=params, report_dir=report_dir, persist=persist)
    if not result.success:
        raise GateFailed(result)
    return result


# ---------------------------------------------------------------------------------------------------------
# Row-count bounds


def row_count_bounds(
    recent_counts: list[int], *, min_ratio: float, max_ratio: float, min_rows: int
) -> tuple[int, int | None]:
    """Expected ``(min_rows, max_rows)`` for today's row count, relative to the median of recent days.

    The bounds are ``floor(median * min_ratio)`` (never below ``min_rows``) and ``ceil(median * max_ratio)``
    (never below the lower bound). With no history, only ``min_rows`` applies: ``(min_rows, None)``.
    Days with zero rows still count (they pull the median down); pass only days that were ingested.
    """
    if min_ratio < 0 or max_ratio <= 0 or min_rows < 0:
        raise ValueError("row_count_bounds needs min_ratio >= 0, max_ratio > 0 and min_rows >= 0")
    if min_ratio > max_ratio:
        raise ValueError(f"min_ratio {min_ratio} is above max_ratio {max_ratio}")
    if not recent_counts:
        return min_rows, None
    if any(count < 0 for count in recent_counts):
        raise ValueError(f"row counts cannot be negative: {recent_counts}")
    median = statistics.median(recent_counts)
    low = max(min_rows, math.floor(median * min_ratio))
    high = max(low, math.ceil(median * max_ratio))
    return low, high
