"""The docs keep up with the code: docs/configuration.md names every setting
there is, section by section (a new key cannot ship undocumented, nor a
documented one vanish), and docs/architecture.md names every package.
docs/api.md is checked against the served routes in tests/functional."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from bastion.settings import RouteGroupPolicy, Section, Settings

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "configuration.md"


def _sections() -> dict[str, str]:
    """Heading name ("server", "top-level") -> the text under it."""
    found: dict[str, str] = {}
    for part in re.split(r"^## ", DOC.read_text(), flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        match = re.fullmatch(r"`\[(\w+)\]`", heading.strip())
        found[match[1] if match else heading.strip().lower()] = body
    return found


def _keys(text: str) -> set[str]:
    return set(re.findall(r"`([a-z0-9_]+)`", text))


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


def test_architecture_names_every_package_and_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    source = ROOT / "src" / "bastion"
    names = {p.name for p in source.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    names |= {p.stem for p in source.glob("*.py") if p.stem not in ("__main__",)}
    missing = sorted(name for name in names if f"`{name}" not in text)
    assert not missing, f"docs/architecture.md does not mention: {missing}"
