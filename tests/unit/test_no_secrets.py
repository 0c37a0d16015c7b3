"""No secret in the repository: detect-secrets over every tracked file, against the audited baseline.

`.secrets.baseline` lists what was reviewed and is not a secret (a Kubernetes secret's *name* in the config,
moto's dummy "testing" credentials). Anything else the scanners find fails the suite; after a review,
regenerate the baseline with `detect-secrets scan $(git ls-files) > .secrets.baseline`.
"""

from __future__ import annotations

import json
import subprocess

from tests.conftest import REPO


def _scan(paths: list[str]) -> set[tuple[str, str]]:
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    found = SecretsCollection(root=str(REPO))
    with default_settings():
        # One file at a time, in this process: scan_files forks a pool, and forking the test process after
        # other tests left threads (MLflow's artifact pool) once hung the suite at the pool's shutdown.
        for path in paths:
            found.scan_file(path)
    return {(filename, secret.secret_hash) for filename, secret in found}


def test_no_secret_outside_the_audited_baseline():
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    tracked = [path for path in listed if path != ".secrets.baseline"]  # its hashes look like secrets
    assert len(tracked) > 50  # the scan really covers the repository
    baseline = json.loads((REPO / ".secrets.baseline").read_text())["results"]
    allowed = {(filename, entry["hashed_secret"]) for filename, entries in baseline.items() for entry in entries}
    new = _scan(tracked) - allowed
    assert not new, f"possible secrets (review, then update .secrets.baseline if they are not): {sorted(new)}"


def test_the_scan_finds_a_planted_key(tmp_path):
    planted = tmp_path / "settings.py"
    planted.write_text(f'AWS_ACCESS_KEY_ID = "{"AKIA" + "IOSFODNN7EXAMPLE"}"\n')
    assert _scan([str(planted)])
