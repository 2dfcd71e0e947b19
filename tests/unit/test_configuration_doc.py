"""docs/configuration.md names every setting there is, section by section,
so a new key cannot ship undocumented (and a documented one cannot vanish)."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from bastion.settings import RouteGroupPolicy, Section, Settings

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def _sections() -> dict[str, str]:
    """Heading name ("server", "top-level") -> the text under it."""
    found: dict[str, str] = {}
    for part in re.split(r"^## ", DOC.read_text(), flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        match = re.fullmatch(r"`\[(\w+)\]`", heading.strip())
        found[match[1] if match else heading.strip().lower()] = body
    return found


def _keys(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", text))


def _fields(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


def test_every_section_and_key_is_documented() -> None:
    sections = _sections()
    top_level: set[str] = set()
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            assert name in sections, f"[{name}] has no section in docs/configuration.md"
            missing = _fields(annotation) - _keys(sections[name])
            assert not missing, f"[{name}] keys missing from docs/configuration.md: {sorted(missing)}"
        elif typing.get_origin(annotation) is dict:
            assert name in sections, f"[{name}] has no section in docs/configuration.md"
        else:
            top_level.add(name)
    missing = top_level - _keys(sections["top-level keys"])
    assert not missing, f"top-level keys missing from docs/configuration.md: {sorted(missing)}"
    missing = _fields(RouteGroupPolicy) - _keys(sections["network"])
    assert not missing, f"[[network.route_groups]] keys missing: {sorted(missing)}"


def test_no_documented_section_is_gone() -> None:
    known = set(Settings.model_fields) | {"the data directory", "top-level keys"}
    assert set(_sections()) <= known
