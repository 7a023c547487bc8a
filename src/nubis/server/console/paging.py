"""Paging and filters of console lists (``?status=&q=&page=``), shown by partials/pager.html."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

PAGE_SIZE = 50


@dataclass(frozen=True)
class Paged:
    page: int
    total: int
    size: int = PAGE_SIZE
    filters: dict[str, str] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    def query(self, page: int) -> str:
        return urlencode({**{k: v for k, v in self.filters.items() if v}, "page": page})


def clamp_page(page: int, total: int, size: int = PAGE_SIZE) -> int:
    return max(1, min(page, max(1, -(-total // size))))
