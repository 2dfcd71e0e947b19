"""A real Bastion provider and relying parties we did not write, for tests/e2e/oauth.

``provider()`` starts ``bastion serve`` whose issuer (``auth.public_url``)
is the very URL the relying parties reach, creates users with ``bastion
users create`` and clients with ``bastion oauth client create`` (its last
line of output is the client's JSON), and runs rp/rp.mjs — openid-client and
oauth4webapi, installed from rp/package-lock.json — with the server's dev CA
trusted through ``NODE_EXTRA_CA_CERTS`` (TLS verification stays on).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from e2e.serving import Served, clean_env, free_port, missing_peer, serve

RP = Path(__file__).parent / "rp"
NODE = shutil.which("node")
PASSWORD = "tangerine-orbit-cascade-91"
REDIRECT_URI = "https://rp.example.com/callback"
LOGOUT_URI = "https://rp.example.com/signed-out"


def require_node() -> None:
    if NODE is None or not (RP / "node_modules" / "openid-client").is_dir():
        missing_peer("node and tests/e2e/oauth/rp/node_modules are needed (scripts/setup dev installs them)")


@dataclass
class Provider:
    served: Served
    env: dict[str, str]

    @property
    def issuer(self) -> str:
        return self.served.url

    @property
    def data(self) -> Path:
        return self.served.data

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "bastion", *args, "--data-dir", str(self.data)],
            env=self.env,
            input=stdin,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def user(self, email: str | None = None) -> str:
        email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
        self.cli("user", "create", "--email", email, "--verified", "--password-stdin", stdin=PASSWORD + "\n")
        return email

    def client(
        self,
        *,
        redirect_uris: tuple[str, ...] = (REDIRECT_URI,),
        grants: tuple[str, ...] = ("authorization_code", "refresh_token"),
        scopes: tuple[str, ...] = ("openid", "profile", "email", "offline_access", "me:read"),
        options: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """``bastion oauth client create …``: the JSON object on its last line of output."""
        args = ["oauth", "client", "create", "--name", f"RP {uuid.uuid4().hex[:6]}"]
        for uri in redirect_uris:
            args += ["--redirect-uri", uri]
        for grant in grants:
            args += ["--grant", grant]
        for scope in scopes:
            args += ["--scope", scope]
        out = self.cli(*args, *options)
        created = json.loads(out.strip().splitlines()[-1])
        assert isinstance(created, dict), out
        assert created["client_id"], out
        return created

    def node(self, command: dict[str, Any]) -> dict[str, Any]:
        """One step of rp.mjs: openid-client or oauth4webapi doing it, its JSON answer."""
        env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(self.data / "tls" / "ca.pem")}
        env.pop("NODE_TLS_REJECT_UNAUTHORIZED", None)
        assert NODE is not None
        done = subprocess.run(
            [NODE, str(RP / "rp.mjs")],
            input=json.dumps({"issuer": self.issuer, **command}),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=RP,
        )
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        assert isinstance(answer, dict)
        return answer

    def ok(self, command: dict[str, Any]) -> dict[str, Any]:
        answer = self.node(command)
        assert answer["ok"], answer
        return answer

    def browser(self, *, http2: bool = False) -> httpx.AsyncClient:
        """A fresh user agent (its own cookie jar) over HTTP/1.1 or HTTP/2."""
        return httpx.AsyncClient(
            base_url=self.issuer, verify=self.served.tls(), http1=not http2, http2=http2, timeout=20
        )


@contextmanager
def provider(data: Path, **settings: str) -> Iterator[Provider]:
    port = free_port()
    issuer = f"https://localhost:{port}"
    settings = {
        "BASTION_AUTH__PUBLIC_URL": issuer,
        "BASTION_HTTP__ALLOWED_HOSTS": '["localhost"]',
        # Cheap hashes: every flow signs a person in.
        "BASTION_PASSWORDS__MEMORY_COST_KIB": "7168",
        "BASTION_PASSWORDS__TIME_COST": "1",
        # Every flow comes from 127.0.0.1 within a minute or two: these tests are not about the
        # throttles (tests/functional/oauth and tests/e2e/oauth/upstream test those).
        "BASTION_OAUTH__AUTHORIZE_RATE_PER_IP": "600/minute",
        "BASTION_OAUTH__TOKEN_RATE_PER_IP": "1200/minute",
        "BASTION_AUTH__LOGIN_RATE_PER_IP": "300/minute",
        **settings,
    }
    with serve(data, port=port, **settings) as served:
        yield Provider(served, clean_env(**{"BASTION_ADMIN__ENABLED": "false", **settings}))
