"""Files shipped inside the ``loopline`` package (SQL migrations, GX suites, settings files), found through the
import system, so a checkout, an editable install and an installed wheel find them alike."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["package_path"]


def package_path(*parts: str) -> Path:
    """The path of ``loopline/<parts...>``. Wheels install as files (never zipped), so each resource is a real
    path that ``glob`` and ``open`` take."""
    return Path(str(files("loopline").joinpath(*parts)))
