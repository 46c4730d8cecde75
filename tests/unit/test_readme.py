"""README snippets are real: its commands exist, its variables are the settings, its data is valid."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from bus.cli import app
from bus.settings import Settings
from schemas.registry import parse_event

REPO = Path(__file__).parents[2]
README = (REPO / "README.md").read_text()
SNIPPETS = "\n".join(re.findall(r"```sh\n(.*?)```", README, flags=re.S))


def _sgbus_commands() -> list[list[str]]:
    """Each `.venv/bin/sgbus ...` command line of the README's shell snippets, as the words that
    name its command and subcommands (up to the first option or argument), without repeats."""
    cli = get_command(app)
    commands: list[list[str]] = []
    for line in SNIPPETS.splitlines():
        line = line.split("#", 1)[0].strip().rstrip("&").strip()
        if not line.startswith(".venv/bin/sgbus"):
            continue
        path: list[str] = []
        node = cli
        for word in line.split()[1:]:
            subcommands = getattr(node, "commands", None)  # a group (typer's, not click.Group)
            if subcommands is None or word.startswith("-"):
                break
            path.append(word)
            node = subcommands.get(word)
            if node is None:  # not a command: the test then fails on it
                break
        if path not in commands:
            commands.append(path)
    return commands


def test_quick_start_is_exactly_make_demo_and_make_test() -> None:
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    first_block = re.search(r"```sh\n(.*?)```", quick, flags=re.S)
    assert first_block is not None
    assert [ln.split("#")[0].strip() for ln in first_block.group(1).strip().splitlines()] == [
        "make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


@pytest.mark.parametrize("command", _sgbus_commands(), ids=" ".join)
def test_every_sgbus_command_in_the_readme_exists(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output


def test_the_sgbus_entry_point_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "bus", "--help"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0 and "Usage" in result.stdout, result.stderr


def test_readme_documents_every_setting() -> None:
    documented = set(re.findall(r"`(SGBUS_[A-Z_]+)`", README))
    expected = {f"SGBUS_{name.upper()}" for name in Settings.model_fields} | {"SGBUS_CACHE_DIR"}
    assert documented == expected


def test_readme_example_file_holds_valid_events() -> None:
    lines = (REPO / "tests/data/demo-events.jsonl").read_text().splitlines()
    assert len(lines) >= 4
    for line in lines:
        parse_event(line)

