"""The admin API, served on the admin listener only.

Public API: ``router`` (``/admin/api/v1/…``). Its routes are thin: they
check an admin permission from a two-factor session and call the domains'
services, which write the changes and their audit events.
"""

from bastion.admin.routes import router

__all__ = ["router"]
