"""Locate the Prometheus and Alertmanager command-line tools the deploy tests run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules"
PROMTOOL_TESTS = REPO / "deploy" / "prometheus" / "tests"
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"


def tool(*names: str) -> str:
    """The first of `names` on PATH; fails (never skips) when none is installed."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{' or '.join(names)} not found: run scripts/setup.sh (it installs Debian's "
                "prometheus and prometheus-alertmanager packages)", pytrace=False)


def run(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, check=False)
