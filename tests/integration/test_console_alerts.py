"""The console's /alerts page on the real app in-process: states with colours, rules, silences
(writers create and delete them with the session's CSRF token; a viewer gets 403 and sees no form),
deliveries, and another workspace's silences 404."""

from __future__ import annotations

import time

from test_console_pages import browser, flash

from nubis.models.routes import DeploymentLoad, LoadReport
from nubis.server.reconcilers.alerts import AlertEvaluator

import rows
from platform_fixtures import Platform


async def firing_error_rate(p: Platform) -> None:
    """A deployment whose every answer was a 5xx: one evaluation round makes error_rate fire."""
    await rows.deployment(p.ctx, "api", autoscaling={"min_replicas": 0})
    load = DeploymentLoad(workspace="default", name="api", in_flight=0, queued=0, requests=40, errors=40)
    p.ctx.history.record(LoadReport(gateway_id="g", at="2026-01-01T00:00:00Z", routes_version=None,
                                    deployments=[load]), now=time.time())
    await AlertEvaluator(p.ctx).evaluate_once()


async def test_alerts_page_shows_states_rules_and_silences_for_writers(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    await firing_error_rate(p)
    async with browser(p, await p.token("member")) as (http, csrf):
        page = (await http.get("/alerts")).text
        assert 'href="/alerts"' in page and "1 firing" in page
        assert '<span class="badge c-red">firing</span>' in page and "error_rate" in page
        assert "min_requests=20" in page and 'id="create-silence"' in page
        assert "none is set" in page
        r = await http.post("/alerts/silences", data={"rule": "error_rate", "object": "api", "duration": "2h",
                                                      "comment": "known"})
        assert r.status_code == 403 and "CSRF" in flash(r.text)
        r = await http.post("/alerts/silences", data={"csrf": csrf, "rule": "error_rate", "object": "api",
                                                      "duration": "2h", "comment": "known"})
        assert r.status_code == 303
        page = (await http.get("/alerts")).text
        assert ">silenced<" in page and "known" in page
        bad = await http.post("/alerts/silences",
                              data={"csrf": csrf, "rule": "error_rate", "duration": "soon"})
        assert bad.status_code == 422 and "duration" in flash(bad.text)
        bad = await http.post("/alerts/silences", data={"csrf": csrf, "object": "a\x01b", "duration": "1h"})
        assert bad.status_code == 422 and "control characters" in flash(bad.text)
        [silence] = (await p.http.get("/api/v1/alerts/silences", headers=p.admin)).json()
        async with browser(p, await p.token("viewer")) as (viewer, viewer_csrf):
            seen = (await viewer.get("/alerts")).text
            assert "error_rate" in seen and 'id="create-silence"' not in seen and ">delete<" not in seen
            r = await viewer.post(f"/alerts/silences/{silence['id']}/delete", data={"csrf": viewer_csrf})
            assert r.status_code == 403
        async with browser(p, await p.token("admin", workspace="other")) as (other, other_csrf):
            theirs = (await other.get("/alerts")).text
            assert "No alerts" in theirs and "No silences" in theirs and "known" not in theirs
            r = await other.post(f"/alerts/silences/{silence['id']}/delete", data={"csrf": other_csrf})
            assert r.status_code == 404
        r = await http.post(f"/alerts/silences/{silence['id']}/delete", data={"csrf": csrf})
        assert r.status_code == 303
        assert (await p.http.get("/api/v1/alerts/silences", headers=p.admin)).json() == []
