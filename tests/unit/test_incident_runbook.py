"""docs/incident-response.md: every command it shows exists, with every option it shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import typer.main

from bastion.cli import app

RUNBOOK = Path(__file__).parents[2] / "docs" / "incident-response.md"
# The playbook headings NIST SP 800-61r3's phases are applied to (the issue's list).
PLAYBOOKS = (
    "leaked master key",
    "leaked signing key",
    "stolen admin certificate",
    "credential stuffing",
    "one compromised user",
    "suspected database rewrite",
)


# Groups built alongside the incident toolkit (the monitor's alerts, the responder's blocks):
# a branch without them yet skips their lines; once registered, they are checked like the rest.
LANDING = frozenset({"alerts", "block"})


def commands_in(text: str) -> list[str]:
    inline = re.findall(r"`(bastion [^`]+)`", text)
    blocks = [line.strip() for line in text.splitlines() if line.strip().startswith("bastion ")]
    found = []
    for command in inline + blocks:
        # A table cell writes alternatives as `a\|b`; take the first.
        found.append(command.replace("\\|", "|"))
    return found


def resolve(words: list[str]) -> tuple[Any, list[str]]:
    """The click command ``words`` name (after ``bastion``) and the words left over.

    Duck-typed: typer carries its own copy of click, whose classes are not ``click``'s.
    """
    command: Any = typer.main.get_command(app)
    rest = list(words)
    while hasattr(command, "commands") and rest and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    return command, rest


def test_every_command_of_the_runbook_exists_with_its_options() -> None:
    text = RUNBOOK.read_text()
    commands = commands_in(text)
    assert len(commands) > 40
    problems = []
    for line in commands:
        words = shlex.split(line.split("$(")[0].replace("|", " "))[1:]
        command, rest = resolve(words)
        if hasattr(command, "commands") and words[0] in LANDING and words[0] not in command.commands:
            continue  # checked as soon as that group is registered (below)
        if hasattr(command, "commands"):
            problems.append(f"{line}: no such command")
            continue
        options = {opt for param in command.params for opt in param.opts}
        for word in rest:
            if word.startswith("--") and word.split("=")[0] not in options:
                problems.append(f"{line}: {command.name} has no option {word}")
    assert not problems, "\n".join(problems)


def test_the_runbook_has_the_six_playbooks_and_the_three_phases() -> None:
    text = RUNBOOK.read_text()
    headings = [line[len("## Playbook: ") :].lower() for line in text.splitlines() if line.startswith("## Playbook: ")]
    assert headings == list(PLAYBOOKS)
    assert "SP 800-61 Revision 3" in text
    for section in re.split(r"^## Playbook: ", text, flags=re.MULTILINE)[1:]:
        for phase in ("**Detect.**", "**Respond.**", "**Recover.**"):
            assert phase in section, (section.splitlines()[0], phase)
