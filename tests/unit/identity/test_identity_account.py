"""``Account`` is the ``users`` row the services pass around: it must carry
every column, in the order ``ACCOUNT`` selects them."""

from __future__ import annotations

import dataclasses

import pytest

from bastion.identity.models import ACCOUNT, Account, User


def test_an_account_has_every_column_of_users() -> None:
    """A column added to the table without a field would be invisible to the
    services (a lockout field nobody reads): the field list follows the table."""
    assert [field.name for field in dataclasses.fields(Account)] == list(User.__table__.c.keys())
    assert [column.key for column in ACCOUNT] == list(User.__table__.c.keys())


def test_an_account_is_not_changed_in_place() -> None:
    """A change is an UPDATE that returns the new row, never an attribute set
    that nothing writes back."""
    row = tuple(None for _ in ACCOUNT)
    account = Account.of(row)
    with pytest.raises(dataclasses.FrozenInstanceError):
        account.disabled = True  # type: ignore[misc]
