"""Where a benchmark's figures go: ``benchmarks/results/<name>.json``, the one place measured figures are kept.

A benchmark prints its figures as lines tagged ``[tag] ...`` (``[day] ingest: 12.37 s``). Run under
:func:`recording`, every tagged line it prints (tags in ``skip`` left out: progress, set-up) is also kept, and
when the benchmark finishes without an error the file is written with the date, the machine and the command.
The run the file held before moves to its ``earlier_runs``, so no measurement is lost. The documentation's
Benchmarks page is rendered from these files.

    if __name__ == "__main__":
        with recording("scoring", note="what was compared, on what data"):
            main()
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import platform
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

RESULTS = Path(__file__).resolve().parent / "results"
_TAG = re.compile(r"^\[([a-z][a-z0-9_-]*)[\] ]")  # "[day] ...", "[demo  12.7] ...": not usage lines ("[-h]")


def machine() -> dict[str, Any]:
    """The machine a figure was measured on, with its load when the run ended (1, 5 and 15 minutes: other work
    sharing the cores shows here)."""
    return {
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


class _Tee(io.TextIOBase):
    """Writes through to the real stdout and keeps the complete lines that ``keep`` accepts."""

    def __init__(self, out: TextIO, keep: Callable[[str], bool]) -> None:
        self.out, self.keep, self.lines, self._partial = out, keep, [], ""

    def write(self, text: str) -> int:
        self.out.write(text)
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        self.lines += [line.rstrip() for line in complete if self.keep(line.rstrip())]
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def tagged(skip: tuple[str, ...]) -> Callable[[str], bool]:
    """Lines ``[tag] ...`` whose tag is not in ``skip``."""

    def keep(line: str) -> bool:
        match = _TAG.match(line)
        return bool(match) and match.group(1) not in skip

    return keep


def write(name: str, figures: list[str] | dict[str, Any], note: str = "", results: Path = RESULTS) -> Path:
    """Write one run's figures to ``<results>/<name>.json``; the run the file held moves to ``earlier_runs``."""
    path = results / f"{name}.json"
    record: dict[str, Any] = {
        "benchmark": Path(sys.argv[0]).name or name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(sys.argv),
        "note": note,
        "figures": figures,
    }
    if path.exists():
        earlier = json.loads(path.read_text(encoding="utf-8"))
        record["earlier_runs"] = [earlier, *earlier.pop("earlier_runs", [])]
    results.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


@contextlib.contextmanager
def recording(
    name: str,
    note: str = "",
    skip: tuple[str, ...] = ("up", "setup"),
    keep: Callable[[str], bool] | None = None,
    results: Path = RESULTS,
) -> Iterator[list[str]]:
    """Keep the tagged lines printed inside the block; write them to the results file if it ends normally and
    printed any."""
    tee = _Tee(sys.stdout, keep or tagged(skip))
    sys.stdout = tee
    try:
        yield tee.lines
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
    finally:
        sys.stdout = tee.out
    if not tee.lines:  # e.g. --help, or a run that measured nothing: the file keeps what it held
        print(f"[results] no figure lines printed: {results / name}.json left as it was")
        return
    path = write(name, tee.lines, note, results)
    print(f"[results] {len(tee.lines)} figure lines written to {path}")
