"""``bastion sbom``: a CycloneDX 1.6 JSON bill of materials of the running installation.

Every distribution installed in Bastion's environment is one component with
its version and package URL (``pkg:pypi/name@version``), test and tool
dependencies included: they run on the same machine. Built with
cyclonedx-python-lib's object model and serialiser, so the document follows
the schema by construction.
"""

from __future__ import annotations

from collections.abc import Iterable

from bastion.posture.advisories import installed


def _requirements(site: Iterable[str] | None) -> dict[str, set[str]]:
    """Canonical name -> the canonical names it requires (every extra's too: they may be installed)."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    graph: dict[str, set[str]] = {}
    distributions = metadata.distributions(path=list(site)) if site is not None else metadata.distributions()
    for dist in distributions:
        names = set()
        for line in dist.requires or []:
            try:
                names.add(str(canonicalize_name(Requirement(line).name)))
            except InvalidRequirement:
                continue
        graph.setdefault(str(canonicalize_name(dist.metadata["Name"] or "")), names)
    return graph


def sbom_json(*, site: Iterable[str] | None = None) -> str:
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL
    from packaging.utils import canonicalize_name

    from bastion import __version__

    def component(name: str, version: str, kind: ComponentType) -> Component:
        purl = PackageURL(type="pypi", name=str(canonicalize_name(name)), version=version)
        return Component(name=name, version=version, type=kind, bom_ref=purl.to_string(), purl=purl)

    application = component("bastion", __version__, ComponentType.APPLICATION)
    found: dict[str, Component] = {
        str(canonicalize_name(name)): component(name, version, ComponentType.LIBRARY)
        for name, version in installed(site)
    }
    found.pop("bastion", None)
    bom = Bom(components=found.values(), metadata=BomMetaData(component=application))
    # The dependency graph from each distribution's requirements (installed ones only).
    for name, requires in _requirements(site).items():
        node = application if name == "bastion" else found.get(name)
        if node is not None:
            bom.register_dependency(node, [found[r] for r in requires if r in found])
    text: str = JsonV1Dot6(bom).output_as_string(indent=2)
    return text
