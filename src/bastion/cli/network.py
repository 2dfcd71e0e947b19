"""``bastion ca …`` and ``bastion firewall …``: thin commands over the network services.

The services are imported inside the commands, so ``--help`` does not load them.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.common import DataDir, err, fail, one_line_errors, out

ca = typer.Typer(name="ca", help="Bastion's own CA for admin client certificates (mTLS).", no_args_is_help=True)
firewall = typer.Typer(name="firewall", help="Host firewall rules for the configured listeners.", no_args_is_help=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@ca.command("init")
def ca_init(data_dir: DataDir = None) -> None:
    """Create the CA; its key is sealed in the keystore (keys/bastion-ca.key)."""
    from bastion.network.ca import BastionCa
    from bastion.settings import load_settings

    with one_line_errors():
        authority = BastionCa.init(load_settings(data_dir), now=_now())
    out.print(f"[green]CA created:[/] {authority.paths.certificate}", highlight=False)
    # The admin listener chooses its mode (mTLS or, in dev, open) when it starts; SIGHUP only reloads files.
    err.print("restart `bastion serve` to turn on client certificates on the admin listener")


@ca.command("issue")
def ca_issue(
    name: Annotated[str, typer.Argument(help="Who the certificate is for (its CN and file name).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the files to.")],
    days: Annotated[int, typer.Option(min=1, max=3650, help="Validity in days.")] = 365,
    p12: Annotated[bool, typer.Option("--p12", help="Write one password-protected NAME.p12 instead.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Issue a client certificate: OUT/NAME.pem + OUT/NAME.key, or OUT/NAME.p12."""
    from bastion.network.ca import BastionCa
    from bastion.security import token_urlsafe
    from bastion.settings import load_settings

    with one_line_errors():
        authority = BastionCa.open(load_settings(data_dir))
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        targets = [out_dir / f"{name}.p12"] if p12 else [out_dir / f"{name}.pem", out_dir / f"{name}.key"]
        for target in targets:
            if target.exists():
                fail(f"{target} already exists; pick another --out or move it aside")
        bundle = authority.issue(name, days=days, now=_now())
        password = None
        if p12:
            password = token_urlsafe(18)
            _write_private(targets[0], authority.pkcs12(bundle, password))
        else:
            _write_private(targets[0], bundle.certificate_pem, mode=0o644)
            _write_private(targets[1], bundle.key_pem)
    serial = format(bundle.serial, "x")
    out.print(f"issued {name} serial {serial} valid until {bundle.not_after:%Y-%m-%d}", highlight=False)
    for target in targets:
        out.print(f"wrote {target}", highlight=False)
    if password is not None:
        # Shown once, like an API key: Bastion keeps no copy.
        out.print(f"p12 password (shown once): {password}", highlight=False)


@ca.command("revoke")
def ca_revoke(
    serial_or_name: Annotated[str, typer.Argument(metavar="SERIAL|NAME", help="A serial (hex) or a name.")],
    data_dir: DataDir = None,
) -> None:
    """Revoke certificates; the admin listener refuses them from its next handshake."""
    from bastion.network.ca import BastionCa
    from bastion.settings import load_settings

    with one_line_errors():
        revoked = BastionCa.open(load_settings(data_dir)).revoke(serial_or_name, now=_now())
    for record in revoked:
        out.print(f"revoked {record.name} serial {record.serial_hex}", highlight=False)


@ca.command("list")
def ca_list(data_dir: DataDir = None) -> None:
    """List issued certificates and their status."""
    from rich.table import Table

    from bastion.network.ca import list_issued
    from bastion.settings import load_settings

    with one_line_errors():
        records = list_issued(load_settings(data_dir))
    now = _now()
    table = Table("serial", "name", "issued", "expires", "status", title="Bastion CA")
    for record in records:
        table.add_row(
            record.serial_hex,
            record.name,
            f"{record.issued_at:%Y-%m-%d}",
            f"{record.not_after:%Y-%m-%d}",
            record.status(now),
        )
    out.print(table)


@firewall.command("render")
def firewall_render(
    fmt: Annotated[str, typer.Option("--format", help="Ruleset format.")] = "nftables",
    output: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Print a least-privilege host ruleset: listener ports open, admin port to its allowlist, the rest dropped."""
    from bastion.network import firewall as firewall_rules
    from bastion.settings import load_settings

    if fmt not in firewall_rules.FORMATS:
        fail(f"unknown format {fmt!r}; supported: {', '.join(firewall_rules.FORMATS)}")
    with one_line_errors():
        ruleset = firewall_rules.render(load_settings(data_dir), fmt)
        if output is None:
            typer.echo(ruleset, nl=False)
        else:
            output.write_text(ruleset)
            err.print(f"wrote {output}; check it with `nft -c -f {output}`", highlight=False)


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
