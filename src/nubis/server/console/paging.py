"""Paged lists: which slice of a list a page shows, and the links to the pages around it (the
filters stay in the links). The services count and slice in SQL (``LIMIT``/``OFFSET``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlencode

PAGE_SIZE = 50
MAX_PAGE = 100_000


@dataclass(frozen=True)
class Paged:
    page: int
    total: int
    size: int = PAGE_SIZE
    filters: tuple[tuple[str, str], ...] = ()
    """The query parameters every page link keeps (``status``, ``name``…); empty ones are left out."""

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    def query(self, page: int) -> str:
        return urlencode([*((k, v) for k, v in self.filters if v), ("page", str(page))])
