"""The documentation's own rules: every setting is described on the model, the README stays short and true to
the repository, and no page cites a measured figure that no results file holds."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _hook():
    spec = importlib.util.spec_from_file_location("loopline_docs", REPO / "docs" / "hooks" / "loopline_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docs = _hook()


def _pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_every_config_key_has_a_description():
    rows = docs.config_fields()
    assert len(rows) > 150  # every section, nested sections and union members included
    missing = [f"{row['model']}.{row['path']}" for row in rows if not row["description"]]
    assert not missing, "config keys without a description (add an attribute docstring on the model): " + ", ".join(
        missing
    )


def test_the_reference_lists_every_shipped_key():
    page = docs.config_reference_markdown()
    shipped = yaml.safe_load((REPO / "include/loopline/config/loopline.yaml").read_text(encoding="utf-8"))

    def keys(tree, prefix=""):
        for key, value in tree.items():
            path = f"{prefix}.{key}" if prefix else key
            yield path
            if isinstance(value, dict) and not path.startswith(("reference.currencies", "training.search.space")):
                if path.endswith(("node_selector", "guardrails", "server_conf")):
                    continue
                yield from keys(value, path)

    for path in keys(shipped):
        listed = f"| `{path}` |" in page or f"## `{path}`" in page
        assert listed, f"{path} is in loopline.yaml but not in the configuration reference"


def test_a_missing_description_is_found():
    from pydantic import BaseModel

    class Probe(BaseModel):
        described: int = 1
        """Has one."""
        bare: int = 2

    sys.path.insert(0, str(REPO / "include"))
    import loopline.config as config

    original = config.LooplineConfig.model_fields["retry"].annotation
    try:
        config.LooplineConfig.model_fields["retry"].annotation = Probe
        rows = {row["path"]: row["description"] for row in docs.config_fields()}
    finally:
        config.LooplineConfig.model_fields["retry"].annotation = original
    assert rows["retry.bare"] == ""
    assert rows["retry.described"] == ""  # a docstring counts only with use_attribute_docstrings, as on _Section


def test_cited_figures_are_recognised():
    text = (
        "It took 12.7 min (about 10 s a day) and 1.13x; peak 3.5 GB; 16,165 rows/s; 0.64x of the CPU. "
        "Not figures: `timeout 900 s`, 30 nights, ds=2026-01-01, 20 days, the 1h window.\n"
        "```\n[day] 45.8 s end to end\n```\n"
    )
    assert docs.cited_figures(text) == ["12.7 min", "10 s", "1.13x", "3.5 GB", "16,165 rows/s", "0.64x"]


def test_a_figure_is_held_at_its_precision_and_unit():
    held = {762.0, 0.6421, 16165.0}
    assert docs.is_held("12.7 min", held)  # 762 s
    assert docs.is_held("0.64x", held)
    assert docs.is_held("16,165 rows/s", held)
    assert not docs.is_held("12.8 min", held)
    assert not docs.is_held("0.65x", held)


def test_results_files_name_their_date_and_machine():
    files = docs.results_files()
    assert files
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data.get("date") or data.get("measured_at"), f"{path.name}: no date"
        assert data.get("machine") or data.get("machine_cores"), f"{path.name}: no machine"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_page_cites_a_figure_no_results_file_holds(page):
    held = docs.held_numbers()
    unheld = docs.unheld_figures(page.read_text(encoding="utf-8"), held)
    assert not unheld, (
        f"{page.relative_to(REPO)} cites measured figures that no benchmarks/results/*.json holds: {unheld}. "
        "Write the figure into the benchmark's results file (with date and machine) and link the Benchmarks page."
    )


def test_the_readme_is_short():
    assert len((REPO / "README.md").read_bytes()) < 12 * 1024


def test_the_readme_names_only_paths_that_exist():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (REPO / target).exists(), f"README links to {target}, which does not exist"
    for path in re.findall(r"`((?:dags|plugins|include|spark_jobs|docker|tests|benchmarks|docs)/[^`*<{ ]*)`", text):
        assert (REPO / path).exists(), f"README names {path}, which does not exist"


def test_the_readme_commands_exist():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for target in set(re.findall(r"`make ([a-z-]+)", text)):
        assert re.search(rf"^{target}:", makefile, re.M), f"README names `make {target}`, not a Makefile target"
    help_text = subprocess.run(
        [sys.executable, "-m", "loopline", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / "include"), "PATH": str(BIN)},
    ).stdout
    commands = set(re.search(r"\{([a-z,-]+)\}", help_text).group(1).split(","))  # argparse's choices
    for command in set(re.findall(r"`loopline ([a-z-]+)", text)):
        assert command in commands, f"README names `loopline {command}`, which the CLI does not have"


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8").replace("!!python/name:", ""))

    def flat(nav):
        for item in nav:
            if isinstance(item, str):
                yield item
            elif isinstance(item, dict):
                for value in item.values():
                    yield from flat(value) if isinstance(value, list) else [value]

    listed = set(flat(config["nav"]))
    on_disk = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md")}
    generated = {docs.CONFIG_PAGE, docs.BENCHMARKS_PAGE}
    assert on_disk | generated <= listed, f"pages missing from the nav: {sorted((on_disk | generated) - listed)}"


def _record():
    spec = importlib.util.spec_from_file_location("bench_record", REPO / "benchmarks" / "record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_benchmark_run_writes_its_tagged_lines_with_date_and_machine(tmp_path, capsys):
    record = _record()
    with record.recording("probe", note="what was compared", results=tmp_path):
        print("[setup] generated 3 days")  # progress: skipped
        print("[day] ingest:", end=" ")
        print("12.37 s")
        print("untagged chatter")
        print("usage: bench [-h]\n             [--days DAYS]")  # argparse's wrapped usage is no figure
    first = json.loads((tmp_path / "probe.json").read_text())
    assert first["figures"] == ["[day] ingest: 12.37 s"]
    assert first["note"] == "what was compared"
    assert first["date"]
    assert first["machine"]["cpu_cores"] >= 1
    assert "untagged chatter" in capsys.readouterr().out  # still printed

    with record.recording("probe", results=tmp_path):
        print("[day] ingest: 11.02 s")
    second = json.loads((tmp_path / "probe.json").read_text())
    assert second["figures"] == ["[day] ingest: 11.02 s"]
    assert [run["figures"] for run in second["earlier_runs"]] == [["[day] ingest: 12.37 s"]]


def test_a_failed_benchmark_run_writes_nothing(tmp_path):
    record = _record()
    stdout = sys.stdout

    def half_a_run():
        with record.recording("probe", results=tmp_path):
            print("[day] half a measurement: 1.0 s")
            raise RuntimeError("server died")

    with pytest.raises(RuntimeError):
        half_a_run()
    assert sys.stdout is stdout
    assert not (tmp_path / "probe.json").exists()

    def exit_two():
        with record.recording("probe", results=tmp_path):
            raise SystemExit(2)

    with pytest.raises(SystemExit):
        exit_two()
    assert not (tmp_path / "probe.json").exists()
    with record.recording("probe", results=tmp_path):  # --help: argparse exits 0 having measured nothing
        raise SystemExit(0)
    assert not (tmp_path / "probe.json").exists()


def test_every_benchmark_writes_a_results_file():
    for script in sorted((REPO / "benchmarks").glob("*.py")):
        if script.name == "record.py":
            continue
        text = script.read_text(encoding="utf-8")
        assert "recording(" in text or ("results" in text and ".write_text(" in text), (
            f"{script.name} does not write benchmarks/results/<name>.json (wrap its main() in record.recording)"
        )
