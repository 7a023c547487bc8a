"""The console's navigation: every page group, and who sees it (the server checks again on each
page; hiding a link is only a convenience)."""

from __future__ import annotations

from dataclasses import dataclass

from nubis.models.auth import Permission
from nubis.server.deps import Caller


@dataclass(frozen=True)
class NavItem:
    label: str
    href: str
    needs: Permission = Permission.read
    superuser: bool = False
    current: bool = False


NAV = (
    NavItem("Overview", "/"),
    NavItem("Deployments", "/deployments"),
    NavItem("Jobs", "/jobs"),
    NavItem("Photons", "/photons"),
    NavItem("Models", "/models"),
    NavItem("Storage", "/storage"),
    NavItem("Secrets", "/secrets"),
    NavItem("Tokens", "/tokens"),
    NavItem("Nodes", "/nodes"),
    NavItem("Alerts", "/alerts"),
    NavItem("Usage", "/usage"),
    NavItem("Workspaces", "/workspaces", needs=Permission.manage, superuser=True),
    NavItem("Audit", "/audit", needs=Permission.manage),
)


def nav_for(caller: Caller | None, path: str) -> list[NavItem]:
    if caller is None:
        return []
    shown = [i for i in NAV if caller.can(i.needs) and (caller.superuser or not i.superuser)]
    return [NavItem(i.label, i.href, i.needs, i.superuser, current=_under(path, i.href)) for i in shown]


def _under(path: str, href: str) -> bool:
    return path == "/" if href == "/" else path == href or path.startswith(href + "/")
