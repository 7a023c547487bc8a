"""``client.usage``: resource-seconds per workspace, deployment or job, with a cost and the quotas."""

from __future__ import annotations

from typing import Any

from nubis.client.base import ResourceAPI
from nubis.models.usage import Prices, Usage, UsageBy


class UsageAPI(ResourceAPI):
    def get(self, since: str = "30d", by: UsageBy | str = UsageBy.workspace, *, daily: bool = False,
            all_workspaces: bool = False, prices: Prices | None = None) -> Usage:
        """``since``: ``'1h'``, ``'30d'``, ``'2w'`` or an ISO-8601 time; ``by``: workspace, deployment or
        job; ``daily``: a row per UTC day as well; ``all_workspaces``: the platform admin only;
        ``prices``: adds a cost to each row."""
        params: dict[str, Any] = {"since": since, "by": UsageBy(by).value, "daily": daily,
                                  "all_workspaces": all_workspaces}
        if prices is not None:
            params.update(prices.model_dump())
        return Usage.model_validate(self._t.json("GET", "/usage", params=params))
