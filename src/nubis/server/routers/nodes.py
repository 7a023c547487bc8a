"""/api/v1/nodes — the backend's machines: capacity, labels, workloads, events."""

from __future__ import annotations

from fastapi import APIRouter

from nubis.models.nodes import Node, NodeDetail
from nubis.server.deps import Context, Reader, Session
from nubis.server.services import nodes

router = APIRouter(prefix="/api/v1/nodes", tags=["nodes"])


@router.get("")
async def list_nodes(caller: Reader, session: Session, ctx: Context) -> list[Node]:
    """Every node with its capacity; workloads of the caller's workspace (all for the platform admin)."""
    return await nodes.list_nodes(session, ctx, caller)


@router.get("/{ref}")
async def get_node(ref: str, caller: Reader, session: Session, ctx: Context) -> NodeDetail:
    """One node (id or a prefix of at least 4 characters) with its recent events."""
    return await nodes.get_node(session, ctx, caller, ref)
