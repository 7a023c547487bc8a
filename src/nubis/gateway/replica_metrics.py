"""``GET /-/replicas/<replica id>/metrics`` on the gateway: one replica's own ``/metrics``, fetched
with the replica's key (replicas answer only their gateway), for a Prometheus that found the
replica through the control plane's service discovery (``/api/v1/prometheus/targets``).

Who may read it: the gateway's own token (the one its ``/metrics`` takes: every replica), or a
token that may call the replica's deployment (its workspace's tokens, or one scoped to it). A
public deployment's replicas are not public here: traffic counts are not the deployment's API.
"""

from __future__ import annotations

import hashlib
import re

import aiohttp

from nubis.gateway.routing import Deployment, Replica, Router
from nubis.photon.runtime import REPLICA_KEY_HEADER

PREFIX = "/-/"
"""The gateway's own paths: no workspace is named ``-``."""
_PATH = re.compile(r"^/-/replicas/([A-Za-z0-9_.-]{1,64})/metrics$")
SCRAPE_TIMEOUT_S = 10.0


def replica_id_of(path: str) -> str | None:
    found = _PATH.match(path)
    return found.group(1) if found else None


def find(router: Router, replica_id: str) -> tuple[Deployment, Replica] | None:
    """The replica in the current routing table (ready or draining), with its deployment."""
    for dep in router.deployments.values():
        for replica in dep.replicas:
            if replica.replica_id == replica_id:
                return dep, replica
    return None


def token_may_read(found: tuple[Deployment, Replica] | None, authorization: bytes | None, *,
                   now: float) -> bool:
    """``Bearer <token>`` with a live token that may call the replica's deployment (whatever its
    access); False for a replica not in the table."""
    if found is None or not authorization or authorization[:7].lower() != b"bearer ":
        return False
    dep = found[0]
    digest = hashlib.sha256(authorization[7:].strip()).hexdigest()
    expires = dep.token_expiry.get(digest)
    return digest in dep.token_hashes and (expires is None or now < expires)


async def scrape(session: aiohttp.ClientSession, replica: Replica) -> tuple[int, bytes, bytes]:
    """(status, content type, body) of the replica's ``/metrics``; raises aiohttp's errors and
    TimeoutError when it cannot be read."""
    headers = {REPLICA_KEY_HEADER: replica.key} if replica.key else {}
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
    async with session.get(f"{replica.endpoint}/metrics", headers=headers, timeout=timeout) as resp:
        body = await resp.read()
        return resp.status, resp.headers.get("content-type", "text/plain").encode(), body
