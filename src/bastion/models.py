"""Every table Bastion's migrations own, in one registry.

``metadata`` is ``Base.metadata`` once every domain's models are imported:
the migrations' environment compares against it (``alembic check``,
``revision --autogenerate``), and so does the test that the migrated schema
matches the models. A domain with tables adds its ``models`` module here.

It sits above the domains, not in ``bastion.db``: every domain imports
``db`` for ``Base``, so ``db`` cannot import them back.
"""

from __future__ import annotations

from bastion.access import models as access_models
from bastion.audit import models as audit_models
from bastion.data import models as data_models
from bastion.db import Base
from bastion.db import models as db_models
from bastion.identity import models as identity_models
from bastion.incident import models as incident_models
from bastion.monitor import models as monitor_models
from bastion.network import models as network_models
from bastion.oauth import models as oauth_models
from bastion.rotation import models as rotation_models
from bastion.sessions import models as sessions_models

MODULES = (
    access_models,
    audit_models,
    data_models,
    db_models,
    identity_models,
    incident_models,
    monitor_models,
    network_models,
    oauth_models,
    rotation_models,
    sessions_models,
)
metadata = Base.metadata


def owned_by_migrations(name: str) -> bool:
    """Whether the migrations manage table ``name``; the collections' record tables follow bastion.toml instead."""
    return not data_models.is_collection_table(name)
