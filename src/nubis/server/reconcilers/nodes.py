"""Watch the backend's nodes: record when one joins and when one is lost, with the engine's reason.

Replicas and job workers on a lost node are noticed by their own reconcilers (their probe says
``node_lost``); this one keeps the node's history (``nubis node get``) and says in the log what
happened to the machine itself.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select

from nubis.backends.nodes import NodeInfo
from nubis.server.context import ServerContext
from nubis.server.orm import NodeEventRow
from nubis.server.services.nodes import record

log = logging.getLogger("nubis.reconciler.nodes")


class NodeWatcher:
    def __init__(self, ctx: ServerContext, *, interval_s: float = 1.0) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self._alive: dict[str, bool] | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:
                log.exception("node watch round failed; retrying")
            await asyncio.sleep(self.interval_s)

    async def check_once(self) -> list[NodeInfo]:
        """Compare the nodes with the last look; returns the nodes lost since then."""
        nodes = await asyncio.to_thread(self.ctx.backend.nodes)
        async with self.ctx.db.sessions() as session:
            if self._alive is None:  # first look: each node as its last recorded event left it
                rows = await session.execute(select(NodeEventRow.node_id, NodeEventRow.kind)
                                             .where(NodeEventRow.kind.in_(("joined", "lost")))
                                             .order_by(NodeEventRow.id))
                self._alive = {node_id: kind == "joined" for node_id, kind in rows.all()}
            lost = []
            for node in nodes:
                was = self._alive.get(node.id)
                if node.alive and was is not True:
                    record(session, node.id, "joined", f"node {node.address} is up: {_describe(node)}")
                    log.info("node %s (%s) is up", node.id, node.address)
                elif not node.alive and was is not False:
                    why = node.death_reason or "the backend lost contact with it"
                    record(session, node.id, "lost", f"node {node.address} was lost: {why}")
                    log.warning("node %s (%s) was lost: %s", node.id, node.address, why)
                    lost.append(node)
                self._alive[node.id] = node.alive
            await session.commit()
        return lost


def _describe(node: NodeInfo) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(node.labels.items()))
    text = f"{node.total.cpu:g} CPU, {node.total.gpu} GPU"
    return f"{text}, labels {labels}" if labels else text
