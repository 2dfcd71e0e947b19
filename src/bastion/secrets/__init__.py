"""Where Bastion's own secrets come from: the master key (environment or a
``*_FILE``) and the keystore of data keys it wraps in ``keys/``."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from bastion.security import KEYRING_PURPOSES, NOTARY_PURPOSE, Keyring, KeyringError, MasterKey, Notary, TokenSigner
from bastion.settings import ConfigError, Settings

# The keyrings every install has had since `bastion init`.
BASE_PURPOSES = ("encryption", "hmac", "signing")
# Keyrings added later (RS256, ES256; the notary's Ed25519 keys that sign
# audit checkpoints and manifests): made when missing, at init and at
# start-up, so an existing install gains them without a step of its own.
ADDED_PURPOSES = ("signing-rs256", "signing-es256", NOTARY_PURPOSE)
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
    notary: Keyring

    def purpose(self, name: str) -> Keyring:
        """The keyring of purpose ``name`` ("signing-rs256"); KeyError if there is none."""
        if name not in KEY_PURPOSES:
            raise KeyError(name)
        keyring: Keyring = getattr(self, name.replace("-", "_"))
        return keyring

    def signing_keyrings(self) -> dict[str, Keyring]:
        """Algorithm -> keyring, what TokenSigner takes."""
        return {alg: self.purpose(purpose) for alg, purpose in KEYRING_PURPOSES.items()}

    def notary_signer(self) -> Notary:
        """Signs notes (audit checkpoints, manifests) with the active notary key."""
        return Notary(self.notary)


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


def checkpoint_origin(settings: Settings) -> str:
    """The audit log's name: the origin line of its checkpoints and the key name they are signed under.

    ``audit.origin`` when set, else the host of ``auth.public_url`` followed by
    "/audit", a schema-less URL as C2SP tlog-checkpoint recommends. A note key
    name may hold no space and no "+", so such an origin is a ConfigError.
    Verifiers read it back from ``bastion keys export-public`` (the vkeys).
    """
    origin = settings.audit.origin or f"{urlsplit(settings.auth.public_url).hostname or 'localhost'}/audit"
    if "+" in origin or any(c.isspace() for c in origin):
        raise ConfigError("audit.origin may contain neither spaces nor '+' (it names the checkpoint signing key)")
    return origin


PUBLIC_KEYS_FORMAT = "bastion-public-keys/v1"


def public_keys_document(settings: Settings, rings: Keyrings, *, now: datetime | None = None) -> dict[str, Any]:
    """What ``bastion keys export-public`` writes: every public key a verifier off the box needs.

    The notary's active and retired keys (revoked ones are left out: what they
    signed must stop verifying), each as kid, status, creation time, the
    signed-note verifier key under the checkpoint origin (``vkey``), the raw
    key in base64 and SubjectPublicKeyInfo PEM; and the token signing keys of
    every algorithm as a JWK Set, with each key's status beside it. Built from
    public halves only: no private member can appear (the test checks the
    output against every key's material).
    """
    at = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    origin = checkpoint_origin(settings)
    notary = [
        {
            "kid": key.kid,
            "status": key.status,
            "created": key.created_at.isoformat(),
            "vkey": key.note_key(origin).vkey(),
            "public_key": base64.b64encode(key.public_key).decode("ascii"),
            "pem": key.public_pem(),
        }
        for key in rings.notary_signer().public_keys()
    ]
    signer = token_signer(settings, rings)
    signing: list[dict[str, Any]] = []
    for alg, purpose in KEYRING_PURPOSES.items():
        for info in rings.purpose(purpose).kids():
            if info.status != "revoked":
                jwk = signer.public_jwk(alg, info.kid)
                signing.append(
                    {
                        "kid": info.kid,
                        "alg": alg,
                        "status": info.status,
                        "created": info.created_at.isoformat(),
                        "jwk": jwk,
                    }
                )
    return {
        "format": PUBLIC_KEYS_FORMAT,
        "generated_at": at.isoformat(),
        "notary": {"origin": origin, "keys": notary},
        "signing": {"issuer": settings.auth.public_url, "keys": signing, "jwks": {"keys": [k["jwk"] for k in signing]}},
    }
