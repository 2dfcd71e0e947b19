"""How a URL is shown in logs, events and listings: by its origin only.

A webhook URL often carries a token in its path or query (``…/hooks/T0K3N``),
and sometimes credentials before the host; none of that may reach a log line
or an event. ``url_origin`` keeps ``scheme://host[:port]`` and drops the rest.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (no user info, path, query or fragment);
    ``"?"`` when it does not parse."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "?"
    if not parts.scheme or not host:
        return "?"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def shown_url(url: str) -> str:
    """The origin, followed by ``/…`` when the URL had more (a path, a query)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "?"
    more = parts.path not in ("", "/") or parts.query or parts.fragment
    return url_origin(url) + ("/…" if more else "")
