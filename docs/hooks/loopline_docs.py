"""MkDocs hook: the pages made from the code and the results files, and the rules the docs tests check.

Two pages are generated at build time, never written by hand:

- ``reference/configuration.md`` from the typed configuration model (:class:`loopline.config.LooplineConfig`):
  every key, its type, its default, the value shipped in ``loopline.yaml`` and its description, which lives on
  the model (attribute docstrings);
- ``benchmarks.md`` from ``benchmarks/results/*.json``, the one place measured figures are kept.

``cited_figures`` and ``unheld_figures`` define what counts as a measured figure in prose and whether a results
file holds it (``tests/docs/test_docs.py``).
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
CONFIG_PAGE = "reference/configuration.md"
BENCHMARKS_PAGE = "benchmarks.md"


def _import_config() -> types.ModuleType:
    include = str(REPO / "include")
    if include not in sys.path:
        sys.path.insert(0, include)
    import loopline.config as config

    return config


# --- configuration reference ------------------------------------------------------------------------------


def _is_model(annotation: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        if all(_is_model(a) for a in args):
            return " | ".join(a.__name__ for a in args)
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if _is_model(annotation):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _nested(annotation: Any, path: str) -> Iterator[tuple[type, str]]:
    """The models inside a field's annotation, with the key path their fields take."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if _is_model(annotation):
        yield annotation, path
    elif origin is typing.Annotated:
        yield from _nested(args[0], path)
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _nested(arg, path)
    elif origin in (list, tuple):
        for arg in args:
            yield from _nested(arg, f"{path}[]")
    elif origin is dict:
        yield from _nested(args[1], f"{path}.<name>")


def _variant(model: type) -> str:
    """``kind: postgres`` for a member of a discriminated union (its one-value ``kind``/``type`` Literal)."""
    for name in ("kind", "type"):
        field = model.model_fields.get(name)
        if field is not None and typing.get_origin(field.annotation) is typing.Literal:
            return f"{name}: {typing.get_args(field.annotation)[0]}"
    return ""


def _default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        value = field.default_factory()
        if _is_model(type(value)):
            return "(section defaults)"
        return json.dumps(value)
    if field.default is PydanticUndefined:
        return "required"
    return json.dumps(field.default)


def config_fields() -> list[dict[str, str]]:
    """Every key of the configuration model, depth first: path, type, default, description, variant."""
    config = _import_config()
    rows: list[dict[str, str]] = []

    def walk(model: type, prefix: str, variant: str) -> None:
        for name, field in model.model_fields.items():
            key = field.alias or name
            path = f"{prefix}.{key}" if prefix else key
            rows.append(
                {
                    "path": path,
                    "type": _type_name(field.annotation),
                    "default": _default(field),
                    "description": (field.description or "").strip(),
                    "variant": variant,
                    "model": model.__name__,
                }
            )
            children = list(_nested(field.annotation, path))
            for child, child_path in children:
                walk(child, child_path, _variant(child) if len(children) > 1 else variant)

    walk(config.LooplineConfig, "", "")
    return rows


def _shipped(tree: Any, path: str) -> str:
    node = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    if isinstance(node, dict | list) and len(json.dumps(node)) > 60:
        return "(see loopline.yaml)"
    return json.dumps(node)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def config_reference_markdown() -> str:
    """The configuration reference page, one table per top-level section."""
    import yaml

    config = _import_config()
    shipped = yaml.safe_load(config.DEFAULT_CONFIG.read_text(encoding="utf-8"))
    out = [
        "# Configuration reference",
        "",
        "Generated at build time from the typed model in `include/loopline/config/` "
        "(`loopline.config.LooplineConfig` and its section modules); the descriptions are the model's own. "
        "The configuration is one file, `include/loopline/config/loopline.yaml` (or the file named by "
        "`LOOPLINE_CONFIG`); any key can be overridden with `LOOPLINE__<SECTION>__<KEY>` (values parsed as "
        "YAML). Unknown keys and wrong types fail at load, naming the key. *Default* is the model's default "
        "(*required*: the file must set it); "
        "*shipped* is the value in the `loopline.yaml` of this repository.",
        "",
    ]
    section = None
    for row in config_fields():
        top = row["path"].split(".")[0].split("[")[0]
        if "." not in row["path"]:
            section = top
            out += [
                "",
                f"## `{top}`",
                "",
                _cell(row["description"]),
                "",
                "| key | type | default | shipped | description |",
                "|---|---|---|---|---|",
            ]
            if row["type"] != "section":
                out.append(
                    f"| `{row['path']}` | `{_cell(row['type'])}` | `{_cell(row['default'])}` | "
                    f"`{_cell(_shipped(shipped, row['path']))}` | {_cell(row['description'])} |"
                )
            continue
        assert section == top
        variant = f"*{row['variant']}*: " if row["variant"] else ""
        value = "" if row["variant"] or "[" in row["path"] or "<" in row["path"] else _shipped(shipped, row["path"])
        out.append(
            f"| `{row['path']}` | `{_cell(row['type'])}` | `{_cell(row['default'])}` | "
            f"{'`' + _cell(value) + '`' if value else ''} | {variant}{_cell(row['description'])} |"
        )
    return "\n".join(out) + "\n"


# --- benchmarks -------------------------------------------------------------------------------------------


# Section titles by results file (their anchors are linked from other pages; a file not listed uses its own title).
TITLES = {
    "setup": "Set-up: install time, venv size, bytecode",
    "feature_pipeline": "Feature pipeline and training",
    "training": "Training",
    "scoring": "Scoring",
    "drift": "Drift detection",
    "training_drift": "Retraining after a drift",
    "load": "Load",
    "demo": "The whole demo",
    "replay_gate": "The demo's promotion",
    "spark_server": "Spark server settings on small days",
    "backfill": "Range backfill",
    "bench_cluster": "Cluster profile",
    "cluster_report": "Cluster profile: the earlier report",
    "search": "Hyper-parameter search",
    "dag_parse": "DAG parse cost",
}


def results_files() -> list[Path]:
    return sorted(RESULTS.glob("*.json"))


def _machine(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(
            f"{k.replace('_', ' ')} {' / '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in value.items()
        )
    return str(value)


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _leaves(item, f"{path}[{n}]")
    else:
        yield path, value


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return _cell(json.dumps(value) if not isinstance(value, str) else value)


_META = {
    "benchmark",
    "title",
    "date",
    "measured_at",
    "machine",
    "machine_cores",
    "note",
    "transcribed",
    "report",
    "command",
    "figures",
    "earlier_runs",
}


def _when_where(data: dict[str, Any]) -> str:
    date = data.get("date") or data.get("measured_at") or "date not recorded"
    machine = data.get("machine") or (f"{data['machine_cores']} cores" if "machine_cores" in data else "")
    return f"{date} · {_machine(machine) or 'machine not recorded'}"


def _render_run(data: dict[str, Any], level: int) -> list[str]:
    """One run of a benchmark: its context, its figures (a transcribed report, the tagged lines it printed, or
    a table of its values) and, below it, the runs the file kept from before."""
    out: list[str] = []
    if data.get("command"):
        out += [f"Command: `{_cell(data['command'])}`", ""]
    for key in ("note", "transcribed"):
        if data.get(key):
            out += [f"*{_cell(data[key])}*", ""]
    figures = data.get("figures")
    if data.get("report"):
        out += [re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + level) + " ", data["report"], flags=re.M), ""]
    elif isinstance(figures, list) and all(isinstance(line, str) for line in figures):
        out += ["```", *figures, "```", ""]
    rest = {k: v for k, v in data.items() if k not in _META}
    if isinstance(figures, dict) and not data.get("report"):
        rest = {**figures, **rest}
    if rest and not data.get("report"):
        out += ["| figure | value |", "|---|---|"]
        out += [f"| `{leaf}` | {_fmt_value(value)} |" for leaf, value in _leaves(rest)]
        out.append("")
    for earlier in data.get("earlier_runs") or []:
        out += [f"{'#' * (level + 2)} Earlier run: {_when_where(earlier)}", ""]
        out += _render_run(earlier, level + 1)
    return out


def benchmarks_markdown() -> str:
    """The benchmarks page: every results file, its date, machine, context and figures."""
    out = [
        "# Benchmarks",
        "",
        "Generated at build time from `benchmarks/results/*.json`, the one place measured figures are kept "
        "(how to run each benchmark: `benchmarks/README.md`). Each section names its file, when and on what it "
        "was measured; runs a file kept from before follow the latest. The figures are measurements of one "
        "machine at one time, not promises: rerun a benchmark on yours before relying on a number.",
        "",
    ]
    for path in results_files():
        data = json.loads(path.read_text(encoding="utf-8"))
        title = TITLES.get(path.stem) or data.get("title") or data.get("benchmark") or path.stem
        out += [f"## {title}", "", f"`benchmarks/results/{path.name}` · {_when_where(data)}", ""]
        if data.get("benchmark"):
            out += [f"Benchmark: `{data['benchmark']}`.", ""]
        out += _render_run(data, 1)
    return "\n".join(out)


# --- the figures rule -------------------------------------------------------------------------------------

_NUMBER = r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?"
# A cited measured figure: a number followed by a unit of time, size, rate or a ratio ("1.13x").
_UNIT = r"\s?(?:ms|s|min|minutes|seconds|CPU s|cpu-s|KB|MB|GB|KiB|MiB|GiB|rows/s|rows a second)(?![\w/])|x(?![\w])"
FIGURE = re.compile(_NUMBER + "(" + _UNIT + ")")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_INLINE = re.compile(r"`[^`\n]*`")


def cited_figures(markdown: str) -> list[str]:
    """Measured figures cited in prose: numbers with a unit of time (ms, s, min), size (KB-GiB), rate (rows/s) or
    a ratio (``1.13x``). Code (fenced blocks and inline code: commands, settings, SQL) is not prose."""
    prose = _INLINE.sub(" ", _FENCE.sub(" ", markdown))
    return [m.group(0).strip() for m in FIGURE.finditer(prose)]


def held_numbers() -> set[float]:
    """Every number a results file holds: its numeric values and the numbers written in its text values."""
    held: set[float] = set()
    for path in results_files():
        for _, value in _leaves(json.loads(path.read_text(encoding="utf-8"))):
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                held.add(float(value))
            elif isinstance(value, str):
                for whole, frac in re.findall(_NUMBER, value):
                    held.add(float(whole.replace(",", "") + (frac or "")))
    return held


# The conversions a cited unit may have been recorded in: seconds as minutes or milliseconds, sizes in binary or
# decimal steps; rates and ratios as they are.
_SCALES = {
    "time": (1, 60, 1 / 60, 1000, 1 / 1000),
    "size": (1, 1000, 1 / 1000, 1024, 1 / 1024),
    "other": (1,),
}


def _kind(unit: str) -> str:
    unit = unit.strip()
    if unit in ("ms", "s", "min", "minutes", "seconds", "CPU s", "cpu-s"):
        return "time"
    if unit in ("KB", "MB", "GB", "KiB", "MiB", "GiB"):
        return "size"
    return "other"


def is_held(figure: str, held: set[float]) -> bool:
    """Whether a results file holds ``figure`` at the precision it is cited with, in its unit or one it converts
    to (seconds and minutes, MB and MiB); rates and ratios only as they are."""
    match = FIGURE.match(figure)
    assert match
    whole, frac, unit = match.groups()
    value = float(whole.replace(",", "") + (frac or ""))
    decimals = len(frac) - 1 if frac else 0
    return any(round(number * scale, decimals) == value for number in held for scale in _SCALES[_kind(unit)])


def unheld_figures(markdown: str, held: set[float] | None = None) -> list[str]:
    held = held_numbers() if held is None else held
    return [figure for figure in cited_figures(markdown) if not is_held(figure, held)]


# --- MkDocs events ----------------------------------------------------------------------------------------


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, CONFIG_PAGE, content=config_reference_markdown()))
    files.append(File.generated(config, BENCHMARKS_PAGE, content=benchmarks_markdown()))
    return files
