"""The docs keep up with the command line: every command and subcommand has help text and appears in the
README, and the old names keep working."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from conftest import ROOT, run_cli
from tweetforge.cli import app

README = (ROOT / "README.md").read_text()
NOT_CLICK_COMMANDS = ("ingest list",)
"""Spelled as an argument of a command rather than a subcommand."""


def commands(group, prefix: str = "") -> list:  # type: ignore[no-untyped-def]
    found = []
    for name, command in group.commands.items():
        if command.hidden:
            continue
        path = f"{prefix}{name}"
        found.append((path, command))
        if hasattr(command, "commands"):  # a group (Typer ships its own click)
            found += commands(command, path + " ")
    return found


def test_every_command_has_help_and_is_in_the_readme():
    tree = commands(typer.main.get_command(app))
    assert len(tree) > 25
    undocumented = [path for path, command in tree if not (command.help or "").strip()]
    assert undocumented == []
    missing = [path for path in [p for p, _ in tree] + list(NOT_CLICK_COMMANDS) if f"tweetforge {path}" not in README]
    assert missing == []


def test_every_command_answers_help():
    runner = CliRunner()
    for path, _ in commands(typer.main.get_command(app)):
        result = runner.invoke(app, [*path.split(), "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, path


def test_old_names_keep_working(tmp_path):
    home = tmp_path / ".tweetforge"
    assert "No imports yet" in run_cli(home, "imports").stdout
    assert "No imports yet" in run_cli(home, "ingest", "list").stdout
    assert "No promotions yet" in run_cli(home, "promotions").stdout
    assert "No promotions yet" in run_cli(home, "models", "promotions").stdout
    top = CliRunner().invoke(app, ["--help"]).output
    assert "imports" not in top and "promotions" not in top
