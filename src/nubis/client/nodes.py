"""``client.nodes``: the backend's machines, their capacity and what runs on them."""

from __future__ import annotations

from nubis.client.base import ResourceAPI
from nubis.models.nodes import Node, NodeDetail


class NodesAPI(ResourceAPI):
    def list(self) -> list[Node]:
        return [Node.model_validate(n) for n in self._t.json("GET", "/nodes")]

    def get(self, ref: str) -> NodeDetail:
        """A node by id or an id prefix of at least 4 characters, with its recent events."""
        return NodeDetail.model_validate(self._t.json("GET", f"/nodes/{ref}"))
