"""A renewed certificate dropped into place while a real server runs is served
without a SIGHUP from anyone: the rotation job sees the files change, records
the reload and signals the supervisor, and no client sees a failure."""

from __future__ import annotations

import shutil
import socket
import ssl
import time
from pathlib import Path

import httpx
from cryptography import x509
from serving import serve

from bastion.security.x509 import write_dev_certificates


def _served_serial(port: int, context: ssl.SSLContext) -> int:
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_replaced_certificate_is_served_after_the_rotation_job_reloads(tmp_path: Path) -> None:
    """V12.1.1 (certificate renewal without downtime): the job notices within a tick
    or two, the listeners restart their workers gracefully, clients keep being served."""
    data = tmp_path / "data"
    # check_interval bounds the job's tick: a second, so the test waits seconds, not minutes.
    with serve(data, BASTION_ROTATION__CHECK_INTERVAL="1s") as served:
        renewal = tmp_path / "renewal"
        write_dev_certificates(renewal)
        bundle = tmp_path / "trust.pem"
        bundle.write_bytes((data / "tls" / "ca.pem").read_bytes() + (renewal / "ca.pem").read_bytes())
        context = ssl.create_default_context(cafile=str(bundle))
        before = _served_serial(served.port, context)
        new = x509.load_pem_x509_certificate((renewal / "server.pem").read_bytes()).serial_number
        # As a renewal tool does: each file written beside and renamed into place.
        for name in ("server.pem", "server.key"):
            shutil.copy(renewal / name, data / "tls" / f".{name}.new")
            (data / "tls" / f".{name}.new").replace(data / "tls" / name)
        failures, seen = 0, before
        deadline = time.monotonic() + 30
        with httpx.Client(verify=context) as client:
            while time.monotonic() < deadline and seen != new:
                try:
                    assert client.get(f"https://localhost:{served.port}/healthz").status_code == 200
                except httpx.TransportError:
                    failures += 1
                seen = _served_serial(served.port, context)
                time.sleep(0.2)
        assert seen == new != before
        assert failures == 0
    output = served.output()
    assert '"rotation:reload"' in output, output[-3000:]
