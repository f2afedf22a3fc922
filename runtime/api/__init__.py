"""Regent's REST API, following Patroni's: health checks for load balancers, the node's and the cluster's status, and
the operator's operations (switchover, failover, restart, reload, reinitialize, config), and the other members'
failsafe-mode pings (POST /failsafe).

Rules of this package:
- Reads never take the HA loop's lock: a health check answers from what the last turn observed (the Postgres state,
  the DCS snapshot, the lease), plus a live look at the postmaster, so HAProxy gets its answer while a turn runs.
- Status codes carry the meaning (Patroni's conventions): 200 yes, 503 no, 4xx a request that cannot be served as
  asked, with a JSON `{"message": ...}` saying why; 500 only for a bug, with the traceback in the log, never in the
  response. HEAD and OPTIONS answer the GET's status with no body. One exception, for Patroni's leaders that post
  to Regent members and read the answer as text: POST /failsafe answers `Accepted` (200), or the refusal's reason
  with 502 (failsafe_mode off) or 500 (any other), as Patroni's members do.
- POST, PATCH and DELETE need `restapi.auth` (HTTP Basic) when it is configured.
- Operations that change Postgres (restart, reinitialize) run between two turns of the loop, never during one; a
  scheduled restart is kept by the agent and run by the first turn at or after its time, a scheduled switchover is
  the failover key with `scheduled_at`, carried out by the leader's rows at that time.
- The API has its own DCS client: its reads must not move the agent's record of the leader key it waits on.
"""

from .server import ApiServer

__all__ = ["ApiServer"]
