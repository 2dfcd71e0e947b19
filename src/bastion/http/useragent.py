"""A User-Agent's family ("Firefox", "Chrome", "curl"): what the sign-in
event records and what a known device is, instead of the full header.

The full header changes with every browser update and says more about a
person than a new-sign-in notice needs; the family and the address's
network are enough to tell "my laptop" from "someone else". Only the
product names below are told apart; anything else is its first product
token, cut short, or "other".
"""

from __future__ import annotations

import re

# Order matters: Edge and Opera also say "Chrome", Chrome also says "Safari".
_FAMILIES = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("CriOS/", "Chrome"),
    ("Safari/", "Safari"),
)
_PRODUCT = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,31}")


def agent_family(user_agent: str | None) -> str:
    """The family of ``user_agent``: a short word, never the header itself."""
    if not user_agent:
        return "other"
    for marker, family in _FAMILIES:
        if marker in user_agent:
            return family
    product = _PRODUCT.match(user_agent.strip())
    if product is None:
        return "other"
    name = product[0].lower()
    return "browser" if name == "mozilla" else name
