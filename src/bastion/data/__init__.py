"""Data: collections declared in bastion.toml or the admin API, their records'
validation, CRUD with cursor pagination, and field encryption.

Public API: ``DataService`` (the catalog of collections and every record
operation), ``FieldSealer`` (encrypted fields and blind indexes),
``apply_configured`` (bring the tables to bastion.toml, as ``bastion migrate``
does) and the errors its routes answer with.
"""

from bastion.data.errors import (
    CollectionChangeRefused,
    CollectionNotFound,
    CorruptRecord,
    DestructiveChanges,
    InvalidQuery,
    InvalidRecord,
    RecordNotFound,
    RecordsForbidden,
)
from bastion.data.sealing import FieldSealer
from bastion.data.service import DataService, apply_configured

__all__ = [
    "CollectionChangeRefused",
    "CollectionNotFound",
    "CorruptRecord",
    "DataService",
    "DestructiveChanges",
    "FieldSealer",
    "InvalidQuery",
    "InvalidRecord",
    "RecordNotFound",
    "RecordsForbidden",
    "apply_configured",
]
