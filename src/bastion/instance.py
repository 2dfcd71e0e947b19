"""Setting up an instance: the data directory, its keys, TLS and schema."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.clock import SystemClock
from bastion.migrations import is_current, upgrade
from bastion.secrets import open_keyrings
from bastion.security import MasterKey
from bastion.security.x509 import write_dev_certificates
from bastion.settings import ConfigError, Settings

if TYPE_CHECKING:
    from bastion.data.tables import Plan

DEFAULT_CONFIG = """\
# Bastion configuration. Every key can be overridden by an environment
# variable BASTION_<SECTION>__<KEY> (e.g. BASTION_SERVER__PORT=9443), and
# every secret setting read from a file named by BASTION_<NAME>_FILE.

# "dev" relaxes the production checks and says so; use "prod" for deployments.
mode = "dev"

[server]
host = "127.0.0.1"
port = 8443
tls = true
# cert_file = "/etc/bastion/tls/server.pem"
# key_file = "/etc/bastion/tls/server.key"
# trusted_proxies = ["10.0.0.0/8"]

[http]
max_body_bytes = 1048576
max_json_depth = 32

[cors]
allow_origins = []
allow_credentials = false

[passwords]
memory_cost_kib = 19456
time_cost = 2
parallelism = 1

[log]
level = "info"

# Collections: typed records at /api/v1/collections/<name>/records. `bastion
# migrate` (and `serve`) create their tables; changes that would drop data
# need `bastion collections apply --force`. See docs/collections.md.
[collections.notes]
# Who may do what: public, authenticated, owner, role:<name>, permission:<perm>; unset = nobody.
rules = { list = "owner", read = "owner", create = "owner", update = "owner", delete = "owner" }

[collections.notes.fields]
title = { type = "string", max_length = 200, required = true, filterable = true }
body = { type = "richtext" }
secret = { type = "encrypted" }
priority = { type = "integer", min = 1, max = 5, filterable = true, sortable = true }
"""


def initialise(settings: Settings) -> list[str]:
    """Create whatever is missing and replace nothing; returns what was done.

    Safe to run again and again: an existing config, master key, keyring or
    certificate is left exactly as it is.
    """
    done: list[str] = []
    directory = settings.data_dir
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        done.append(f"created {directory}")
    for sub in ("outbox", "backups"):
        (directory / sub).mkdir(mode=0o700, exist_ok=True)
    if not settings.config_file.exists():
        write_private(settings.config_file, DEFAULT_CONFIG)
        done.append(f"wrote {settings.config_file}")

    text, _ = settings.master_key_source()
    if text is None:
        if settings.mode != "dev":
            raise ConfigError(
                "prod needs BASTION_MASTER_KEY_FILE (or BASTION_MASTER_KEY); init generates a master key only in dev"
            )
        write_private(settings.dev_master_key_file, MasterKey.generate().to_text() + "\n")
        done.append(
            f"generated a dev master key in {settings.dev_master_key_file} "
            "(in prod keep the master key outside the data dir)"
        )
    open_keyrings(settings, create=True)
    if settings.server.cert_file is None and write_dev_certificates(directory / "tls"):
        done.append(f"wrote a dev CA and a localhost certificate in {directory / 'tls'}")
    done += [change.description for change in migrate(settings).changes]
    return done


def migrate(settings: Settings) -> Plan:
    """Bring the schema up to date, then the collections' tables to bastion.toml
    (refusing, with ConfigError, any change that would drop data); returns the
    collection changes made. Running servers pick them up within a second."""
    from bastion.data.service import apply_configured

    try:
        if not is_current(settings.sqlalchemy_url):
            upgrade(settings.sqlalchemy_url)
        return apply_configured(settings, SystemClock())
    except OSError as exc:
        raise ConfigError(f"the database cannot be reached: {exc.strerror or exc}") from None


def write_private(path: Path, text: str) -> None:
    """Create a file only its owner can read; never replace one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
