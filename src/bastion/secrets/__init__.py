"""Where Bastion's own secrets come from: the master key (environment or a
``*_FILE``) and the keystore of data keys it wraps in ``keys/``."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.security import Keyring, KeyringError, MasterKey
from bastion.settings import ConfigError, Settings

KEY_PURPOSES = ("encryption", "hmac", "signing")


@dataclass(frozen=True)
class Keyrings:
    encryption: Keyring
    hmac: Keyring
    signing: Keyring


def master_key(settings: Settings) -> MasterKey:
    text, _ = settings.master_key_source()
    if text is None:
        raise ConfigError(
            "no master key: set BASTION_MASTER_KEY_FILE (or BASTION_MASTER_KEY); in dev, `bastion init` generates one"
        )
    try:
        return MasterKey.from_text(text)
    except KeyringError as exc:
        raise ConfigError(f"master key: {exc}") from None


def open_keyrings(settings: Settings, *, create: bool = False) -> Keyrings:
    """The keystore; ``create`` makes missing keyrings (``init``), never replaces one."""
    master = master_key(settings)
    keys_dir = settings.keys_dir
    try:
        if create:
            keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            rings = {p: Keyring.load_or_create(keys_dir, p, master) for p in KEY_PURPOSES}
        else:
            rings = {p: Keyring.load(keys_dir, p, master) for p in KEY_PURPOSES}
    except KeyringError as exc:
        raise ConfigError(f"{exc}; run `bastion init` or restore {keys_dir}") from None
    return Keyrings(**rings)
