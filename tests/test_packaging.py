"""pyproject lists its packages by hand (the folder mapping needs it): every package folder must be listed."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for dist_name, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([dist_name, *rel.parts]) if rel.parts else dist_name)
    assert found == listed, f"missing: {sorted(found - listed)}, stale: {sorted(listed - found)}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if '-e ".[dev]"' in line and "pytest" in line)
    assert command.strip() in (ROOT / ".ci" / "run").read_text()


def test_cli_lists_commands_and_refuses_unknown_ones(capsys):
    from fleetserve.runtime.cli import COMMANDS, main

    assert main([]) == 0
    usage = capsys.readouterr().out
    assert all(name in usage for name in COMMANDS)
    assert main(["no-such-command"]) == 2 and "unknown command" in capsys.readouterr().err
    assert all(importlib.util.find_spec(module) is not None for module, _ in COMMANDS.values())
