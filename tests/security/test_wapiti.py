"""wapiti, a crawler and injector, from a network namespace of its own (V1.2.x injection, V3.4.x
headers and cookies, V15.3.x redirects): everything it reports is a finding.

wapiti looks on the internet at start (its SSRF and DNS endpoints, update data); in its
namespace the only route is the veth link to the server, so those attempts fail at once
instead of leaving this machine. It crawls the hosted pages from a valid authorization
request and the API from /openapi.json, with an API key (a session token would be ended by
the first POST /api/v1/auth/logout it sends: an API key cannot log out).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlencode

import pytest

from security.attack import REDIRECT_URI, Namespace, Target, run_tool, tool

pytestmark = pytest.mark.e2e


def _api_key(target: Target) -> str:
    with target.client() as client:
        made = client.post(
            "/api/v1/me/api-keys",
            json={"name": "wapiti", "scopes": ["records:*", "me:read"]},
            headers={"authorization": f"Bearer {target.token}"},
        )
        assert made.status_code == 201, made.text
        return str(made.json()["key"])


def test_the_namespace_has_no_route_but_the_link_to_the_server(scan_namespace: Namespace) -> None:
    """The scanner's namespace reaches the server's address and nothing else (no default route)."""
    routes = subprocess.run(
        scan_namespace.run(["ip", "-4", "route", "show"]), capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    assert "default" not in routes
    assert routes, "no route at all: the veth link is down"
    assert all(line.split()[0].endswith("/30") for line in routes.splitlines()), routes


def test_wapiti_finds_nothing(modern: Target, scan_namespace: Namespace, tmp_path: Path) -> None:
    """V1.2.1-V1.2.5, V3.3.1, V3.4.1-V3.4.4, V15.3.x: wapiti's default modules (sql, xss,
    permanentxss, exec, file, ssrf, redirect, upload, http_headers, cookieflags, csp) report
    no vulnerability and no anomaly (a 5xx or a timeout) on the pages and the API."""
    base = f"https://localhost:{modern.served.port}"
    authorize = urlencode(
        {"response_type": "code", "client_id": modern.client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
         "state": "st4te", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
         "code_challenge_method": "S256"}
    )  # fmt: skip
    report = tmp_path / "report.json"
    output = run_tool(
        "wapiti",
        scan_namespace.run([
            str(tool("wapiti")), "-u", f"{base}/", "--swagger", f"{base}/openapi.json",
            "-s", f"{base}/oauth2/authorize?{authorize}", "-s", f"{base}/oauth2/device/verify",
            "-s", f"{base}/oauth2/sign-in", "-s", f"{base}/verify-email", "-s", f"{base}/reset-password",
            "-H", f"Authorization: Bearer {_api_key(modern)}",
            "--flush-session", "--store-session", str(tmp_path / "session"), "--store-config", str(tmp_path / "config"),
            "-f", "json", "-o", str(report), "--max-scan-time", "60", "--max-attack-time", "10",
            "--tasks", "8", "-v", "1", "--no-bugreport",
        ]),
        seconds=150,
    )  # fmt: skip
    (tmp_path / "wapiti.log").write_text(output)
    found = re.search(r"Wapiti found (\d+) URLs and forms during the scan", output)
    assert found, output[-3000:]
    assert "A report has been generated" in output, output[-3000:]
    paths = len(json.loads(modern.client().get("/openapi.json").text)["paths"])
    assert int(found.group(1)) >= paths, output[-3000:]
    result = json.loads(report.read_text())
    vulnerabilities = {kind: items for kind, items in result["vulnerabilities"].items() if items}
    anomalies = {kind: items for kind, items in result["anomalies"].items() if items}
    assert not vulnerabilities, json.dumps(vulnerabilities, indent=1)[:4000]
    assert not anomalies, json.dumps(anomalies, indent=1)[:4000]
