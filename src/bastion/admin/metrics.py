"""``GET /metrics``: the Prometheus text of every listener and worker, on the admin listener only.

No bearer token: the admin listener's guards are the gate (mTLS with
Bastion's CA and ``admin.allow``; in dev, loopback). The network guard
answers 404 for ``/metrics`` on the public listener, as for ``/admin/*``.
The gauges about the audit log and the alerts are read from the database
now, so every instance shows the same values and no process keeps them.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from bastion.access.deps import public
from bastion.audit.gauges import latest_checkpoint_at, tree_size
from bastion.metrics import CONTENT_TYPE, ScrapeGauges, exposition
from bastion.monitor.gauges import open_alerts

# `public` as access requirement: no credential, because the listener is the
# credential; bastion.network.ipfilter keeps this path off the public listener.
router = APIRouter(include_in_schema=False, dependencies=[Depends(public)])


@router.get("/metrics")
async def scrape(request: Request) -> Response:
    state = request.app.state
    at = await latest_checkpoint_at(state.db)
    gauges = ScrapeGauges(
        audit_tree_size=await tree_size(state.db),
        audit_checkpoint_age_seconds=None if at is None else max(0.0, (state.clock.now() - at).total_seconds()),
        alerts_open=await open_alerts(state.db),
    )
    return Response(exposition(gauges), media_type=CONTENT_TYPE)
