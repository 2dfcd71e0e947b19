"""The audit entry and leaf (bastion.audit.entry) and the many-proofs tree
(bastion.audit.proofs), checked against independent code: the standard
library's JSON and hashlib, and bastion.security.merkle (itself tested on the
published RFC 6962 / transparency-dev vectors)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from typing import Any

import pytest

from bastion.audit.entry import canonical, entry, format_at, leaf_of, personal_hash
from bastion.audit.proofs import Levels
from bastion.security import merkle

VALUES: list[Any] = [
    {"big": 2**100, "negative": -(2**70), "inner": [2**64]},
    {"b": 1, "a": [True, None, 2.5, "x"], "é": "ünï\u2028cödé", "ctl": '\n\t\x01\x7f"\\/'},
    {"nested": {"z": {"y": [], "x": {}}, "a": -0.5}, "big": 2**53, "emoji": "\U0001f512"},
    {},
    [1, "two", {"three": 3}],
]


@pytest.mark.parametrize("value", VALUES)
def test_canonical_json_is_what_the_standard_library_writes(value: Any) -> None:
    """A verifier off the box recomputes entries with json.dumps alone (docs/audit.md)."""
    assert canonical(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_the_leaf_is_rfc6962_of_the_documented_entry() -> None:
    """V16.4.2 (logs protected from modification): the leaf commits to the entry, the entry to the personal fields."""
    salt = bytes(range(32))
    actor = uuid.UUID("12345678-1234-5678-1234-567812345678")
    at = dt.datetime(2026, 12, 1, 17, 14, 40, 123456, tzinfo=dt.UTC)
    fields = {"actor_id": str(actor), "subject_id": None, "ip": "203.0.113.9", "details": {"login": "abc"}}
    personal = hashlib.sha256(salt + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).digest()
    assert personal_hash(salt, actor, None, "203.0.113.9", {"login": "abc"}) == personal
    document = {
        "v": 1,
        "at": "2026-12-01T17:14:40.123456Z",
        "tag": "auth:login",
        "outcome": "failure",
        "request_id": "r1",
        "personal": personal.hex(),
    }
    expected = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert entry(at, "auth:login", "failure", "r1", personal) == expected
    assert leaf_of(at, "auth:login", "failure", "r1", personal) == hashlib.sha256(b"\x00" + expected).digest()


def test_times_are_utc_with_microseconds_whatever_their_zone() -> None:
    at = dt.datetime(2026, 12, 1, 18, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert format_at(at) == "2026-12-01T17:00:00.000000Z"


def test_a_different_salt_or_field_gives_a_different_personal_hash() -> None:
    one = personal_hash(b"\x00" * 32, None, None, "203.0.113.9", {})
    assert personal_hash(b"\x01" * 32, None, None, "203.0.113.9", {}) != one
    assert personal_hash(b"\x00" * 32, None, None, "203.0.113.10", {}) != one


@pytest.mark.parametrize("size", [*range(1, 34), 100, 257])
def test_levels_give_the_rfc_root_and_audit_paths(size: int) -> None:
    leaves = [merkle.leaf_hash(str(i).encode()) for i in range(size)]
    levels = Levels(leaves)
    root = merkle.root(leaves)
    assert levels.root() == root
    for index in range(size):
        proof = levels.inclusion(index)
        assert proof == merkle.inclusion_proof(index, leaves)
        assert merkle.verify_inclusion(leaves[index], index, size, proof, root)


def test_levels_of_nothing_is_the_empty_root() -> None:
    assert Levels([]).root() == merkle.EMPTY_ROOT
    with pytest.raises(IndexError):
        Levels([]).inclusion(0)
