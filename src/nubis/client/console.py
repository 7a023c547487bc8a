"""``client.console``: a one-time link that opens the web console logged in with this client's token."""

from __future__ import annotations

from nubis.client.base import ResourceAPI
from nubis.models.console import ConsoleLink


class ConsoleAPI(ResourceAPI):
    def link(self) -> ConsoleLink:
        """A link for one browser, valid for 60 s: its ``path`` on the control plane's address."""
        return ConsoleLink.model_validate(self._t.json("POST", "/console/links"))
