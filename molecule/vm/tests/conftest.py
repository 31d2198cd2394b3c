"""Name the phase in the test session header, so each verify in the log says which it was."""

import json
import os
from pathlib import Path


def pytest_report_header(config):
    path = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "."), "vm-phase.json")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return f"netfix vm phase: unknown ({e})"
    return f"netfix vm phase: {info.get('phase')} (after {info.get('after', 'converge')})"
