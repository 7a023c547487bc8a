"""init() in the background, failures, async init, shutdown() on exit."""

import asyncio
import logging
import threading

import pytest

import nubis
from nubis.photon.app import build_app
from nubis.photon.runtime import PhotonState
from nubis.photon.testing import photon_http


class Lifecycle(nubis.Photon):
    events: list[str] = []

    def init(self) -> None:
        self.events.append("init")
        self.greeting = "hello"

    def shutdown(self) -> None:
        self.events.append("shutdown")

    @nubis.handler
    def greet(self, who: str) -> str:
        self.events.append(f"greet {who}")
        return f"{self.greeting} {who}"


class AsyncLifecycle(nubis.Photon):
    events: list[str] = []

    async def init(self) -> None:
        await asyncio.sleep(0)
        self.events.append("init")
        self.ready_value = 42

    async def shutdown(self) -> None:
        await asyncio.sleep(0)
        self.events.append("shutdown")

    @nubis.handler
    async def value(self) -> int:
        return self.ready_value


class Broken(nubis.Photon):
    shutdowns: list[str] = []

    def init(self) -> None:
        self.model = load_weights("/nowhere/model.bin")

    def shutdown(self) -> None:
        self.shutdowns.append("shutdown")

    @nubis.handler
    def predict(self, x: int) -> int:
        return x


def load_weights(path: str) -> object:
    raise FileNotFoundError(f"no weights at {path}")


async def test_init_runs_before_handlers_and_shutdown_on_exit() -> None:
    Lifecycle.events = []
    async with photon_http(Lifecycle) as http:
        assert Lifecycle.events == ["init"]
        r = await http.post("/greet", json={"who": "ada"})
        assert r.json() == "hello ada"
        assert Lifecycle.events == ["init", "greet ada"]
    assert Lifecycle.events == ["init", "greet ada", "shutdown"]


async def test_one_instance_handles_every_request() -> None:
    async with photon_http(Lifecycle) as http:
        runtime = http.app.state.runtime  # type: ignore[attr-defined]
        instance = runtime.instance
        assert isinstance(instance, Lifecycle)
        instance.greeting = "hi"
        assert (await http.post("/greet", json={"who": "bob"})).json() == "hi bob"
    assert runtime.state is PhotonState.stopping


async def test_async_init_and_shutdown_are_awaited() -> None:
    AsyncLifecycle.events = []
    async with photon_http(AsyncLifecycle) as http:
        assert AsyncLifecycle.events == ["init"]
        assert (await http.post("/value", json={})).json() == 42
    assert AsyncLifecycle.events == ["init", "shutdown"]


async def test_a_failing_init_marks_the_photon_failed() -> None:
    Broken.shutdowns = []
    async with photon_http(Broken) as http:
        runtime = http.app.state.runtime  # type: ignore[attr-defined]
        assert runtime.state is PhotonState.failed
        assert runtime.instance is None
        error = runtime.error
        assert error.splitlines()[0].startswith("── Broken.init() failed ")
        assert 'self.model = load_weights("/nowhere/model.bin")' in error
        assert "FileNotFoundError: no weights at /nowhere/model.bin" in error
        assert "nubis/photon/runtime.py" not in error  # only the user's frames

        r = await http.post("/predict", json={"x": 1})
        assert r.status_code == 503
        assert r.json() == {
            "error": {
                "code": "not_ready",
                "message": "the photon failed in init(); see its logs",
                "details": None,
            }
        }
        r = await http.get("/readyz")
        assert r.status_code == 503
        assert r.json()["error"]["message"] == "photon is failed"
        r = await http.get("/healthz")
        assert r.json() == {"status": "ok", "state": "failed"}
    assert Broken.shutdowns == []  # never initialised: nothing to shut down


async def test_init_failure_callbacks_get_the_error() -> None:
    app = build_app(Broken)
    seen: list[str] = []
    app.state.runtime.on_init_failed.append(seen.append)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        for _ in range(500):
            if runtime.state is not PhotonState.starting:
                break
            await asyncio.sleep(0.01)
    assert seen == [runtime.error]


async def test_a_failing_shutdown_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class BadExit(nubis.Photon):
        def shutdown(self) -> None:
            raise RuntimeError("cannot release")

        @nubis.handler
        def hi(self) -> str:
            return "hi"

    with caplog.at_level(logging.ERROR, logger="nubis.photon"):
        async with photon_http(BadExit) as http:
            assert (await http.post("/hi", json={})).json() == "hi"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "shutdown() failed" in logged
    assert "RuntimeError: cannot release" in logged


async def test_a_photon_without_handlers_still_answers_health() -> None:
    class Empty(nubis.Photon):
        pass

    async with photon_http(Empty) as http:
        assert (await http.get("/readyz")).status_code == 200
        r = await http.post("/anything", json={})
        assert r.status_code == 404
        assert r.json()["error"]["message"] == ("no handler at /anything; this photon serves: (no handlers)")


async def test_leaving_during_init_does_not_hang_or_call_shutdown() -> None:
    class Stalled(nubis.Photon):
        gate = threading.Event()
        events: list[str] = []

        def init(self) -> None:
            self.gate.wait(timeout=10)

        def shutdown(self) -> None:
            self.events.append("shutdown")

    try:

        async def enter_and_leave() -> PhotonState:
            async with photon_http(Stalled, wait_ready=False) as http:
                runtime = http.app.state.runtime  # type: ignore[attr-defined]
                assert runtime.state is PhotonState.starting
            return runtime.state

        assert await asyncio.wait_for(enter_and_leave(), 5) is PhotonState.stopping
    finally:
        Stalled.gate.set()
    assert Stalled.events == []
