"""Fixtures for the crypto core: a fresh master key and keyrings in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.security import Keyring, MasterKey


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def encryption_keyring(keys_dir: Path, master: MasterKey) -> Keyring:
    return Keyring.load_or_create(keys_dir, "encryption", master)


@pytest.fixture
def hmac_keyring(keys_dir: Path, master: MasterKey) -> Keyring:
    return Keyring.load_or_create(keys_dir, "hmac", master)


@pytest.fixture
def signing_keyring(keys_dir: Path, master: MasterKey) -> Keyring:
    return Keyring.load_or_create(keys_dir, "signing", master)
