"""The gateway's routing state: path parsing, the picker, tokens, table updates, holding."""

import asyncio
import hashlib
from datetime import UTC, datetime

import pytest

from nubis.gateway.metrics import GatewayMetrics
from nubis.gateway.routing import Deployment, Router, split_path
from nubis.models.routes import DeploymentRoute, ReplicaRoute, RoutingTable


def replica(rid: str, *, ready: bool = True, port: int = 9000, key: str | None = None) -> ReplicaRoute:
    return ReplicaRoute(replica_id=rid, endpoint=f"http://127.0.0.1:{port}", ready=ready, key=key)


def table(version: int, *deployments: DeploymentRoute) -> RoutingTable:
    return RoutingTable(version=version, deployments=list(deployments))


def route(*replicas: ReplicaRoute, name: str = "echo", **kw: object) -> DeploymentRoute:
    return DeploymentRoute(workspace="ws", name=name, replicas=list(replicas), **kw)


def router_with(*deployments: DeploymentRoute) -> Router:
    router = Router(GatewayMetrics())
    router.apply(table(1, *deployments))
    return router


def test_split_path() -> None:
    assert split_path(b"/ws/echo/echo") == ("ws", "echo", b"/echo")
    assert split_path(b"/ws/echo/a/b%2Fc") == ("ws", "echo", b"/a/b%2Fc")
    assert split_path(b"/ws/echo") == ("ws", "echo", b"/")
    assert split_path(b"/ws/echo/") == ("ws", "echo", b"/")
    assert split_path(b"/ws") is None
    assert split_path(b"/") is None
    assert split_path(b"//echo/x") is None
    assert split_path(b"/w\xffs/echo/x") is None


def test_pick_prefers_fewest_outstanding() -> None:
    dep = router_with(route(replica("a", port=1), replica("b", port=2))).get("ws", "echo")
    assert dep is not None
    busy = dep.pick(now=0)
    assert busy is not None
    busy.outstanding = 1
    for _ in range(5):
        picked = dep.pick(now=0)
        assert picked is not None and picked is not busy


def test_pick_round_robin_on_ties() -> None:
    dep = router_with(route(replica("a", port=1), replica("b", port=2), replica("c", port=3)))
    got = [dep.get("ws", "echo").pick(now=0).replica_id for _ in range(6)]  # type: ignore[union-attr]
    assert sorted(got) == ["a", "a", "b", "b", "c", "c"]


def test_pick_skips_unready_tried_and_prefers_not_failed() -> None:
    dep = router_with(route(replica("a", port=1), replica("b", port=2),
                            replica("z", ready=False, port=3))).get("ws", "echo")
    assert dep is not None
    a = next(r for r in dep.ready if r.replica_id == "a")
    b = next(r for r in dep.ready if r.replica_id == "b")
    a.failed_until = 10.0
    assert all(dep.pick(now=5).replica_id == "b" for _ in range(4))  # type: ignore[union-attr]
    assert dep.pick(now=11) in (a, b)
    assert dep.pick([b], now=5) is a  # a failed lately but is the only one left
    assert dep.pick([a, b], now=5) is None


def test_apply_keeps_counters_of_listed_replicas() -> None:
    router = router_with(route(replica("a", port=1)))
    dep = router.get("ws", "echo")
    assert dep is not None
    dep.ready[0].outstanding = 3
    router.apply(table(2, route(replica("a", port=1), replica("b", port=2))))
    assert router.get("ws", "echo") is dep
    assert {r.replica_id: r.outstanding for r in dep.ready} == {"a": 3, "b": 0}
    router.apply(table(3))
    assert router.get("ws", "echo") is None
    assert router.version == 3


def test_private_needs_a_listed_token() -> None:
    good = hashlib.sha256(b"nbs_good").hexdigest()
    router = router_with(route(replica("a"), access="private", token_hashes=[good]),
                         route(replica("a"), name="open", access="public"))
    private, public = router.get("ws", "echo"), router.get("ws", "open")
    assert private is not None and public is not None
    assert private.allows(b"Bearer nbs_good", now=0)
    assert private.allows(b"bearer nbs_good", now=0)
    assert not private.allows(b"Bearer nbs_bad", now=0)
    assert not private.allows(b"nbs_good", now=0)
    assert not private.allows(None, now=0)
    assert public.allows(None, now=0)


def test_an_expired_token_is_refused_without_a_new_table() -> None:
    soon, never = hashlib.sha256(b"nbs_soon").hexdigest(), hashlib.sha256(b"nbs_never").hexdigest()
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    router = router_with(route(replica("a"), access="private", token_hashes=[soon, never],
                               token_expires_at={soon: expires}))
    dep = router.get("ws", "echo")
    assert dep is not None
    assert dep.allows(b"Bearer nbs_soon", now=expires.timestamp() - 1)
    assert not dep.allows(b"Bearer nbs_soon", now=expires.timestamp())
    assert dep.allows(b"Bearer nbs_never", now=expires.timestamp() + 1e6)


def test_replica_key_is_kept_and_a_new_key_is_a_new_replica() -> None:
    router = router_with(route(replica("a", key="k1")))
    dep = router.get("ws", "echo")
    assert dep is not None
    first = dep.ready[0]
    assert first.key == "k1" and "k1" not in repr(first)
    router.apply(table(7, route(replica("a", key="k2"))))
    assert dep.ready[0] is not first and dep.ready[0].key == "k2"


async def test_hold_ends_when_a_ready_replica_arrives() -> None:
    router = router_with(route(replica("a", ready=False)))
    dep = router.get("ws", "echo")
    assert isinstance(dep, Deployment)
    waiter = asyncio.create_task(dep.wait_ready(30))
    await asyncio.sleep(0)
    assert dep.queued == 1
    router.apply(table(2, route(replica("a", ready=True))))
    assert await asyncio.wait_for(waiter, 5) is True
    assert dep.queued == 0


@pytest.mark.parametrize("hold", [0, 0.01])
async def test_hold_gives_up(hold: float) -> None:
    dep = router_with(route()).get("ws", "echo")
    assert dep is not None
    assert await dep.wait_ready(hold) is False
    assert dep.queued == 0


def test_table_rejects_duplicates_and_ignores_unknown_fields() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        table(1, route(), route())
    parsed = RoutingTable.model_validate({"version": 1, "future": True, "deployments": [
        {"workspace": "ws", "name": "echo", "replicas": [], "new_field": 1}]})
    assert parsed.deployments[0].access == "private"
    with pytest.raises(ValueError):
        ReplicaRoute(replica_id="r", endpoint="http://host:1/path")


def test_removed_deployment_leaves_the_gauges_once_idle() -> None:
    router = router_with(route(replica("a")))
    dep = router.get("ws", "echo")
    assert dep is not None
    dep.in_flight = 1
    router.apply(table(2))
    assert router.live() == [dep]  # still reported while its request runs
    assert dep.ready == []
    dep.in_flight = 0
    assert router.live() == []
    gauges = {s.name for m in router.metrics.registry.collect() for s in m.samples
              if s.name in ("nubis_gateway_in_flight", "nubis_gateway_queued")}
    assert gauges == set()
