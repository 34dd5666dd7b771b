"""Every script's --help: its own text (what it does, usage, examples and every setting of its
entry config), printed before anything heavy is imported (torch, Lightning), so it is fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from omegaconf import OmegaConf

from tests.helpers import CONF, ROOT, entry_config

SCRIPTS = sorted(p.stem for p in (ROOT / "scripts").glob("*.py"))
HEAVY = ("torch", "lightning", "transformers", "sentence_transformers", "fastapi")
# Runs the script as `python scripts/<name>.py --help` would, then reports which heavy
# modules were imported by then (on stderr, after the help on stdout).
PROBE = """
import json, runpy, sys
script, modules = sys.argv[1], sys.argv[2:]
sys.argv = [script, "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    code = e.code
else:
    code = 0
heavy = [m for m in modules if m in sys.modules]
print("\\nPROBE " + json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def settings(config_name: str) -> list[str]:
    """The entry config's own top-level settings (not its defaults list, hydra or task_name)."""
    own = OmegaConf.load(CONF / f"{config_name}.yaml")
    return [k for k in own if k not in ("defaults", "hydra", "task_name")]


@pytest.fixture(scope="module")
def helps() -> dict[str, tuple[str, dict]]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def run(name: str) -> tuple[str, dict]:
        proc = subprocess.run(
            [sys.executable, "-c", PROBE, str(ROOT / "scripts" / f"{name}.py"), *HEAVY],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        probe = json.loads(proc.stderr.rsplit("PROBE ", 1)[1])
        return proc.stdout, probe

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(SCRIPTS, pool.map(run, SCRIPTS)))


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_is_the_scripts_own_and_lists_its_settings(helps, name):
    text, probe = helps[name]
    assert probe["code"] in (0, None), text
    assert "powered by Hydra" not in text, text  # Hydra's generic page
    assert "Usage:" in text and f"python scripts/{name}.py" in text, text
    config = entry_config(name)
    assert config == name, f"scripts/{name}.py composes conf/{config}.yaml, not its own entry config"
    missing = [key for key in settings(config) if key not in text]
    assert not missing, f"--help of scripts/{name}.py does not mention {missing}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_imports_nothing_heavy(helps, name):
    _, probe = helps[name]
    assert probe["heavy"] == [], f"scripts/{name}.py --help imported {probe['heavy']}"
