"""The runtime: settings from the environment, init/shutdown, readable user errors."""

import asyncio

import pytest

import nubis
from nubis.photon.runtime import (
    DEFAULT_MAX_BODY,
    PhotonRuntime,
    PhotonState,
    ServeSettings,
    format_user_error,
)

ENV = ("NUBIS_MAX_BODY_SIZE", "NUBIS_DEBUG", "NUBIS_PHOTON_TOKEN", "NUBIS_THREADS", "NUBIS_GRACEFUL_TIMEOUT")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_defaults(clean_env: pytest.MonkeyPatch) -> None:
    assert ServeSettings.from_env() == ServeSettings()
    assert ServeSettings() == ServeSettings(
        max_body_size=DEFAULT_MAX_BODY, debug=False, token=None, threads=32, graceful_timeout=30.0
    )
    assert DEFAULT_MAX_BODY == 64 * 2**20


def test_settings_read_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NUBIS_MAX_BODY_SIZE", "1Mi")
    clean_env.setenv("NUBIS_DEBUG", "yes")
    clean_env.setenv("NUBIS_PHOTON_TOKEN", "t0k")
    clean_env.setenv("NUBIS_THREADS", "4")
    clean_env.setenv("NUBIS_GRACEFUL_TIMEOUT", "2.5")
    assert ServeSettings.from_env() == ServeSettings(
        max_body_size=2**20, debug=True, token="t0k", threads=4, graceful_timeout=2.5
    )


@pytest.mark.parametrize(
    ("value", "debug"), [("1", True), ("TRUE", True), ("on", True), ("0", False), ("no", False), ("", False)]
)
def test_debug_flag_values(clean_env: pytest.MonkeyPatch, value: str, debug: bool) -> None:
    clean_env.setenv("NUBIS_DEBUG", value)
    assert ServeSettings.from_env().debug is debug


def test_overrides_win_but_none_means_unset(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NUBIS_PHOTON_TOKEN", "from-env")
    clean_env.setenv("NUBIS_DEBUG", "1")
    settings = ServeSettings.from_env(token="from-flag", debug=None, max_body_size=10)
    assert settings.token == "from-flag"
    assert settings.debug is True
    assert settings.max_body_size == 10


def test_an_empty_token_means_no_token(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NUBIS_PHOTON_TOKEN", "")
    assert ServeSettings.from_env().token is None


class Recording(nubis.Photon):
    log: list[str] = []

    def init(self) -> None:
        self.log.append("init")

    def shutdown(self) -> None:
        self.log.append("shutdown")


class FailingInit(nubis.Photon):
    log: list[str] = []

    def init(self) -> None:
        raise RuntimeError("no GPU here")

    def shutdown(self) -> None:
        self.log.append("shutdown")


async def test_start_then_stop() -> None:
    Recording.log = []
    runtime = PhotonRuntime(Recording, ServeSettings(threads=2))
    assert runtime.state is PhotonState.starting
    assert runtime.ready is False
    await runtime.start()
    assert runtime.state is PhotonState.ready
    assert runtime.ready is True
    assert isinstance(runtime.instance, Recording)
    await runtime.stop()
    assert runtime.state is PhotonState.stopping
    assert Recording.log == ["init", "shutdown"]


async def test_a_failed_start_reports_and_skips_shutdown() -> None:
    FailingInit.log = []
    runtime = PhotonRuntime(FailingInit, ServeSettings(threads=2))
    seen: list[str] = []
    runtime.on_init_failed.append(seen.append)
    await runtime.start()
    assert runtime.state is PhotonState.failed
    assert runtime.instance is None
    assert seen == [runtime.error]
    assert runtime.error is not None
    assert runtime.error.splitlines()[0].startswith("── FailingInit.init() failed ")
    assert "RuntimeError: no GPU here" in runtime.error
    await runtime.stop()
    assert FailingInit.log == []


async def test_sync_init_runs_off_the_event_loop() -> None:
    loop_thread: list[bool] = []

    class WhereAmI(nubis.Photon):
        def init(self) -> None:
            try:
                asyncio.get_running_loop()
                loop_thread.append(True)
            except RuntimeError:
                loop_thread.append(False)

    runtime = PhotonRuntime(WhereAmI, ServeSettings(threads=1))
    await runtime.start()
    await runtime.stop()
    assert loop_thread == [False]


def raise_from_user_code() -> None:
    def inner() -> None:
        raise KeyError("weights")

    inner()


def test_format_user_error_shows_title_frames_and_exception() -> None:
    try:
        raise_from_user_code()
    except KeyError as exc:
        text = format_user_error(exc, "Thing.init() failed")
    lines = text.splitlines()
    assert lines[0] == "── Thing.init() failed " + "─" * (60 - len("Thing.init() failed"))
    assert lines[-1] == "─" * 64
    assert lines[-2] == "KeyError: 'weights'"
    assert "in raise_from_user_code" in text
    assert "in inner" in text
