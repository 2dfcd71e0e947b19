"""Signing-key rotation without failed verifications, and revocation of a leaked key
(issue #13 §4): publish before sign, retire after the last token expires, and a
revoked key verifies nothing at once, across processes (two Keyring objects on
the same files stand for the server and `bastion keys …`)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bastion.security import (
    ALLOWED_ALGORITHMS,
    KEYRING_PURPOSES,
    InvalidToken,
    Keyring,
    KeyringError,
    MasterKey,
    TokenSigner,
    verify_jwt_with_jwks,
)
from bastion.security.keys import KeyInfo

ISSUER = "https://bastion.example"
PUBLISH = 60
TTL = 120


class Deployment:
    """The keystore of one install, seen by a server process and by the operator's CLI."""

    def __init__(self, keys_dir: Path) -> None:
        self.keys_dir = keys_dir
        self.master = MasterKey.generate()
        self.server_rings = {
            alg: Keyring.load_or_create(keys_dir, purpose, self.master) for alg, purpose in KEYRING_PURPOSES.items()
        }
        # Every first key was made now (wall clock); the story starts well after,
        # once they are long published.
        self.start = int(datetime.now(UTC).timestamp()) + 10_000
        self.signer = TokenSigner(
            self.server_rings, issuer=ISSUER, publish_seconds=PUBLISH, max_ttl_seconds=TTL, key_check_seconds=0
        )

    def operator(self, alg: str) -> Keyring:
        """What `bastion keys …` opens: another Keyring on the same file."""
        return Keyring.load(self.keys_dir, KEYRING_PURPOSES[alg], self.master)

    def sign(self, alg: str, now: int) -> str:
        return self.signer.sign({"sub": "u"}, now=now, ttl_seconds=TTL, alg=alg, audience="api")

    def published(self, now: int) -> set[str]:
        return {key["kid"] for key in self.signer.public_jwks(now=now)["keys"]}


def at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def kid_of(token: str) -> str:
    return str(json.loads(base64.urlsafe_b64decode(token.split(".", maxsplit=1)[0] + "=="))["kid"])


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return Deployment(tmp_path / "keys")


@pytest.mark.parametrize("alg", ALLOWED_ALGORITHMS)
def test_v13_3_4_rotation_has_zero_failed_verifications(deployment: Deployment, alg: str) -> None:
    """ASVS V13.3.4: through a whole rotation, a relying party that fetched the JWKS
    before it and refreshes it every ``publish_seconds`` verifies every token still
    valid, at every moment; Bastion's own verifier too; the new key signs only once
    published that long, and the old one leaves the JWKS only after its last token
    expired."""
    start = deployment.start
    old_kid = deployment.signer.signing_kid(alg, now=start)
    fetched_at, jwks = start, deployment.signer.public_jwks(now=start)
    issued = [(start, deployment.sign(alg, start))]
    new_kid = deployment.operator(alg).rotate(at=at(start + 5))

    failures, signers_seen = [], []
    for now in range(start + 5, start + 5 + PUBLISH + TTL + 10, 3):
        if now - fetched_at >= PUBLISH:  # the relying party's cache expires
            fetched_at, jwks = now, deployment.signer.public_jwks(now=now)
        token = deployment.sign(alg, now)
        issued.append((now, token))
        signers_seen.append(kid_of(token))
        assert new_kid in deployment.published(now)  # published at once
        for signed_at, old in issued:
            if now >= signed_at + TTL:
                continue  # expired: nobody should accept it
            try:
                verify_jwt_with_jwks(old, jwks, algorithms=[alg], typ="at+jwt", now=now)
                deployment.signer.verify(old, now=now, audience="api")
            except InvalidToken:
                failures.append((signed_at, now))
    assert failures == []
    assert signers_seen[0] == old_kid  # publish before sign
    assert signers_seen[-1] == new_kid
    first_new = start + 5 + 3 * signers_seen.index(new_kid)
    assert first_new >= start + 5 + PUBLISH
    assert old_kid not in deployment.published(first_new + TTL + 3)  # retired, then dropped


def test_v13_3_4_a_token_signed_before_a_rotation_still_verifies_after_it(deployment: Deployment) -> None:
    """ASVS V13.3.4: every algorithm rotated at once (`bastion keys rotate signing`);
    pre-rotation tokens verify after it, here and from a freshly fetched JWKS."""
    start = deployment.start
    before = {alg: deployment.sign(alg, start) for alg in ALLOWED_ALGORITHMS}
    for alg in ALLOWED_ALGORITHMS:
        deployment.operator(alg).rotate(at=at(start + 1))
    later = start + PUBLISH + 30
    jwks = deployment.signer.public_jwks(now=later)
    for alg, token in before.items():
        assert deployment.signer.verify(token, now=start + 100, audience="api")["sub"] == "u"
        assert verify_jwt_with_jwks(token, jwks, algorithms=[alg], typ="at+jwt", now=start + 100)
        assert kid_of(deployment.sign(alg, later)) != kid_of(token)


def test_v13_3_4_a_second_rotation_inside_the_publish_window_keeps_the_published_key_signing(
    deployment: Deployment,
) -> None:
    """Two rotations in a row: the key that has been published long enough keeps
    signing; a newer one never signs before its own publish delay."""
    start, alg = deployment.start, "ES256"
    first = deployment.signer.signing_kid(alg, now=start)
    second = deployment.operator(alg).rotate(at=at(start))
    third = deployment.operator(alg).rotate(at=at(start + 30))
    assert deployment.signer.signing_kid(alg, now=start + 30) == first
    assert deployment.signer.signing_kid(alg, now=start + PUBLISH + 10) == second
    assert deployment.signer.signing_kid(alg, now=start + 30 + PUBLISH + 1) == third
    assert {first, second, third} <= deployment.published(start + 40)


def test_v13_3_4_a_rotation_soon_after_install_keeps_the_first_key_signing(tmp_path: Path) -> None:
    """Neither key has been published ``publish_seconds`` yet: the one published
    longest (the first) signs until the new one has been, never the newer one."""
    deployment = Deployment(tmp_path / "keys")
    created = int(datetime.now(UTC).timestamp())
    first = deployment.signer.signing_kid("RS256", now=created)
    second = deployment.operator("RS256").rotate(at=at(created + 1))
    assert deployment.signer.signing_kid("RS256", now=created + 2) == first
    assert deployment.signer.signing_kid("RS256", now=created + 1 + PUBLISH) == first
    assert deployment.signer.signing_kid("RS256", now=created + 2 + PUBLISH) == second


def test_publish_seconds_zero_signs_with_the_new_key_at_once(tmp_path: Path) -> None:
    """``signing_publish_seconds = 0``: the rotated-in key signs at once, even for a
    clock that stands before the key's creation (a test's frozen clock)."""
    ring = Keyring.load_or_create(tmp_path, "signing", MasterKey.generate())
    signer = TokenSigner({"EdDSA": ring}, issuer=ISSUER, publish_seconds=0)
    new = ring.rotate()
    for now in (0, int(datetime.now(UTC).timestamp()) + 5):
        assert signer.signing_kid("EdDSA", now=now) == new


def test_sign_refuses_a_lifetime_longer_than_the_retention(deployment: Deployment) -> None:
    """A token may not outlive its key's publication: ttl is capped at max_ttl_seconds."""
    with pytest.raises(ValueError, match="max_ttl_seconds"):
        deployment.signer.sign({"sub": "u"}, now=deployment.start, ttl_seconds=TTL + 1)


# --- revocation ------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALLOWED_ALGORITHMS)
def test_v9_1_1_revoking_the_active_key_refuses_its_tokens_at_once_and_rotates(
    deployment: Deployment, alg: str
) -> None:
    """ASVS V9.1.1, V13.3.4: `bastion keys revoke signing KID` on the active key (in
    another process): the server refuses its tokens on the next call, those it had
    verified and remembered included; the kid leaves the JWKS; a new key signs at
    once (no publish delay: the alternative is signing with a leaked key); the other
    algorithms' tokens are untouched."""
    start = deployment.start
    leaked = deployment.signer.signing_kid(alg, now=start)
    token = deployment.sign(alg, start)
    others = {other: deployment.sign(other, start) for other in ALLOWED_ALGORITHMS if other != alg}
    assert deployment.signer.verify(token, now=start, audience="api")
    assert token in deployment.signer._verified

    new_kid = deployment.operator(alg).revoke(leaked, at=at(start + 1))
    assert new_kid is not None
    with pytest.raises(InvalidToken):
        deployment.signer.verify(token, now=start + 2, audience="api")
    assert token not in deployment.signer._verified
    assert leaked not in deployment.published(start + 2)
    assert new_kid in deployment.published(start + 2)
    fresh = deployment.sign(alg, start + 2)
    assert kid_of(fresh) == new_kid
    assert deployment.signer.verify(fresh, now=start + 2, audience="api")
    for other_token in others.values():
        assert deployment.signer.verify(other_token, now=start + 2, audience="api")


def test_v9_1_1_revoking_a_retired_key_refuses_the_tokens_it_signed(deployment: Deployment) -> None:
    """ASVS V9.1.1: a retired key, still published for its live tokens, is revoked:
    they are refused at once and it leaves the JWKS; the active key is unchanged."""
    start, alg = deployment.start, "RS256"
    old = deployment.signer.signing_kid(alg, now=start)
    token = deployment.sign(alg, start)
    new = deployment.operator(alg).rotate(at=at(start + 1))
    later = start + PUBLISH + 5
    assert deployment.signer.verify(token, now=later, audience="api")
    assert old in deployment.published(later)
    assert deployment.operator(alg).revoke(old) is None
    with pytest.raises(InvalidToken):
        deployment.signer.verify(token, now=later, audience="api")
    assert old not in deployment.published(later)
    assert deployment.signer.signing_kid(alg, now=later) == new


def test_v9_1_1_revoking_a_fresh_key_never_brings_back_an_unpublished_one(deployment: Deployment) -> None:
    """After a key retired long ago (no longer published), the active key leaks and is
    revoked: the replacement signs, not the old key, and the old key stays unpublished."""
    start, alg = deployment.start, "EdDSA"
    oldest = deployment.signer.signing_kid(alg, now=start)
    leaked = deployment.operator(alg).rotate(at=at(start))
    much_later = start + PUBLISH + TTL + 100
    assert oldest not in deployment.published(much_later)
    replacement = deployment.operator(alg).revoke(leaked, at=at(much_later))
    assert deployment.signer.signing_kid(alg, now=much_later + 1) == replacement
    assert deployment.published(much_later + 1) & {oldest, leaked} == set()


def test_v9_1_1_a_key_revoked_during_its_publish_window_lets_the_previous_key_sign_on(
    deployment: Deployment,
) -> None:
    """A key rotated in, then revoked before it signed anything: the key that was
    signing goes on until the revoked key's publish delay would have ended (it is
    still published for verifiers), then the replacement signs."""
    start, alg = deployment.start, "ES256"
    previous = deployment.signer.signing_kid(alg, now=start)
    fresh = deployment.operator(alg).rotate(at=at(start))
    replacement = deployment.operator(alg).revoke(fresh, at=at(start + 10))
    assert deployment.signer.signing_kid(alg, now=start + 20) == previous
    assert previous in deployment.published(start + 20)
    assert deployment.signer.signing_kid(alg, now=start + 10 + PUBLISH + 1) == replacement


def test_v13_3_1_a_revoked_key_keeps_no_material_and_stays_revoked(deployment: Deployment) -> None:
    """ASVS V13.3.1: the tombstone has no key material (its wrapped value opens to
    nothing), survives later rotations as "revoked", and cannot be revoked twice."""
    ring = deployment.operator("EdDSA")
    leaked = ring.active_kid
    ring.revoke(leaked)
    ring.rotate()
    reloaded = Keyring.load(deployment.keys_dir, "signing", deployment.master)
    assert {info.kid: info.status for info in reloaded.kids()}[leaked] == "revoked"
    with pytest.raises(KeyringError):
        reloaded.secret(leaked)
    assert reloaded._entries[0][1] == b""
    with pytest.raises(KeyringError, match="already revoked"):
        reloaded.revoke(leaked)
    with pytest.raises(KeyringError, match="no key"):
        reloaded.revoke("no-such-kid")


def test_v11_2_5_a_tombstone_carrying_material_is_corrupt(deployment: Deployment) -> None:
    """ASVS V11.2.5: a "revoked" entry must be empty; one with material fails closed."""
    ring = deployment.operator("EdDSA")
    info = ring.kids()[0]
    ring._save([(KeyInfo(info.kid, info.created_at, "revoked"), bytes(32))], replace=True)
    with pytest.raises(KeyringError, match="corrupt"):
        Keyring.load(deployment.keys_dir, "signing", deployment.master)
