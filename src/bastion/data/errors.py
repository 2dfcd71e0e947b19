"""The data domain's public errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.http.problems import Conflict, Forbidden, NotFound, Problem, ValidationFailed
from bastion.settings import ConfigError

if TYPE_CHECKING:
    from bastion.data.tables import Change


class CollectionNotFound(NotFound):
    detail = "There is no such collection."


class RecordNotFound(NotFound):
    # Also the answer for records the caller may not see (ASVS V8.2.2).
    detail = "There is no such record."


class RecordsForbidden(Forbidden):
    detail = "You are not allowed to do this in this collection."


class InvalidRecord(ValidationFailed):
    @classmethod
    def at(cls, pointer: str, detail: str) -> InvalidRecord:
        return cls(extra={"errors": [{"pointer": pointer, "detail": detail}]})


class InvalidQuery(ValidationFailed):
    detail = "The query has invalid parameters."

    @classmethod
    def at(cls, parameter: str, detail: str) -> InvalidQuery:
        return cls(extra={"errors": [{"parameter": parameter, "in": "query", "detail": detail}]})


class CorruptRecord(Problem):
    """A stored ciphertext failed authentication: refused, never returned as garbage."""

    status = 500
    title = "Internal Server Error"
    detail = "A stored value failed its integrity check. Quote the request id when reporting it."


class CollectionChangeRefused(Conflict):
    detail = "The change needs --force (it drops data) or conflicts with other collections."

    def __init__(self, reasons: list[str], **kwargs: Any) -> None:
        super().__init__(extra={"changes": reasons}, **kwargs)


class DestructiveChanges(ConfigError):
    """``bastion migrate`` / ``collections apply`` without ``--force`` met a change that drops data."""

    def __init__(self, changes: list[Change]) -> None:
        listed = "; ".join(change.description for change in changes)
        super().__init__(f"collections need destructive changes ({listed}): review `bastion collections plan`, "
                         "then run `bastion collections apply --force`")  # fmt: skip
