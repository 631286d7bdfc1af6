"""The README's two set-up commands, and CI running the second one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text[text.index("## Set-up") : text.index("## Use")]
    blocks = re.findall(r"```bash\n(.*?)```", setup, re.S)
    return [
        next(line for line in b.splitlines() if line and not line.startswith("#")) for b in blocks
    ]


def test_the_readme_has_two_commands_each_in_a_brand_new_venv():
    demo, tests = _readme_commands()
    for command in (demo, tests):
        assert "python3 -m venv --clear .venv && . .venv/bin/activate && pip install -e " in command
    assert demo.endswith("sparse-tvm demo")
    assert tests.startswith("apt-get update && apt-get install -y")
    assert tests.endswith('python -m pytest -m "not slow and not gpu"')


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = _readme_commands()
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in lines
