"""sslyze against Mozilla's server-side TLS recommendations, one profile per server (V12.1.1,
V12.1.2, V12.1.4 where the profile asks for it): the public listener on ``[tls] profile =
"intermediate"`` (the default) and on ``"modern"``, each checked against the configuration of
the same name. sslyze's verdict line is the result; its exit code alone would pass a scan
that could not connect."""

from __future__ import annotations

import pytest

from security.attack import Target, run_tool, tool

pytestmark = pytest.mark.e2e


def _sslyze(server: Target, profile: str) -> str:
    where = f"localhost:{server.served.port}"
    output = run_tool(
        f"sslyze ({profile})",
        [tool("sslyze"), "--mozilla_config", profile, "--certinfo_ca_file", server.ca, f"{where}{{{server.address}}}"],
        seconds=120,
    )
    assert "SCANS COMPLETED IN" in output, output[-3000:]
    assert f"{where}: OK - Compliant." in output, output[-3000:]
    return output


def test_intermediate_profile_is_mozilla_intermediate_compliant(target: Target) -> None:
    """V12.1.1, V12.1.2: TLS 1.2 and 1.3 only, forward-secret AEAD suites, a valid certificate."""
    output = _sslyze(target, "intermediate")
    assert "TLS 1.2" in output
    assert "TLS 1.3" in output


def test_modern_profile_is_mozilla_modern_compliant(modern: Target) -> None:
    """V12.1.1: the modern profile is TLS 1.3 only, and sslyze finds it Mozilla-modern compliant."""
    _sslyze(modern, "modern")
