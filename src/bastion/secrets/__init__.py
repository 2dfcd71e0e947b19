"""Where Bastion's own secrets come from: the master key (environment or a
``*_FILE``) and the keystore of data keys it wraps in ``keys/``."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.security import KEYRING_PURPOSES, Keyring, KeyringError, MasterKey, TokenSigner
from bastion.settings import ConfigError, Settings

# The keyrings every install has had since `bastion init`.
BASE_PURPOSES = ("encryption", "hmac", "signing")
# Signing keyrings added later (RS256, ES256): made when missing, at init and
# at start-up, so an existing install gains them without a step of its own.
ADDED_PURPOSES = ("signing-rs256", "signing-es256")
KEY_PURPOSES = BASE_PURPOSES + ADDED_PURPOSES
# Every keyring holding signing keys, one per algorithm (`bastion keys rotate signing`).
SIGNING_PURPOSES = tuple(KEYRING_PURPOSES.values())


@dataclass(frozen=True)
class Keyrings:
    encryption: Keyring
    hmac: Keyring
    signing: Keyring
    signing_rs256: Keyring
    signing_es256: Keyring

    def purpose(self, name: str) -> Keyring:
        """The keyring of purpose ``name`` ("signing-rs256"); KeyError if there is none."""
        if name not in KEY_PURPOSES:
            raise KeyError(name)
        keyring: Keyring = getattr(self, name.replace("-", "_"))
        return keyring

    def signing_keyrings(self) -> dict[str, Keyring]:
        """Algorithm -> keyring, what TokenSigner takes."""
        return {alg: self.purpose(purpose) for alg, purpose in KEYRING_PURPOSES.items()}


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
    """The keystore; ``create`` makes missing keyrings (``init``), never replaces one.

    The keyrings added after the first release are made when missing even
    without ``create`` (the base ones must already be there, so a wrong
    data directory still fails rather than growing a keystore).
    """
    master = master_key(settings)
    keys_dir = settings.keys_dir
    try:
        if create:
            keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            rings = {p: Keyring.load_or_create(keys_dir, p, master) for p in BASE_PURPOSES}
        else:
            rings = {p: Keyring.load(keys_dir, p, master) for p in BASE_PURPOSES}
        rings |= {p: Keyring.load_or_create(keys_dir, p, master) for p in ADDED_PURPOSES}
    except KeyringError as exc:
        raise ConfigError(f"{exc}; run `bastion init` or restore {keys_dir}") from None
    return Keyrings(**{p.replace("-", "_"): ring for p, ring in rings.items()})


def token_signer(settings: Settings, rings: Keyrings) -> TokenSigner:
    """The signer of every token Bastion issues, as the server builds it.

    One issuer, ``auth.public_url`` (issue #13 §4). Retired keys stay
    published while a token they signed may live: the longest token
    lifetime of the settings, which is also the longest ``sign`` accepts.
    """
    return TokenSigner(
        rings.signing_keyrings(),
        issuer=settings.auth.public_url,
        publish_seconds=settings.auth.signing_publish_seconds,
        max_ttl_seconds=max(
            settings.auth.access_token_ttl, settings.oauth.access_token_ttl, settings.oauth.id_token_ttl
        ),
    )
