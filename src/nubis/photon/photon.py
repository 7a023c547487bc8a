"""``nubis.Photon``: a model service written as a Python class."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, ClassVar

from prometheus_client.registry import Collector

from nubis.errors import PhotonDefinitionError
from nubis.models.photons import HandlerInfo
from nubis.models.resources import Resources
from nubis.photon.handler import Handler, HandlerSpec

_NAME = re.compile(r"^[a-z0-9][a-z0-9\-]{0,62}$")


class Photon:
    """Subclass this, set class-level config, write ``init()`` and ``@nubis.handler`` methods.

    ``name`` defaults to the class name in lower case; ``requirements`` lists pip requirements;
    ``resources`` is what one replica needs. Do not override ``__init__``: put set-up in
    ``init()``, which runs once before the photon reports ready, and clean-up in ``shutdown()``.
    """

    name: ClassVar[str | None] = None
    requirements: ClassVar[list[str]] = []
    resources: ClassVar[Resources] = Resources()

    handlers: ClassVar[dict[str, HandlerSpec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            raise PhotonDefinitionError(
                f"{cls.__name__} overrides __init__: photons are created by nubis. "
                "Move your set-up code into `def init(self):`, which runs once before serving."
            )
        if not isinstance(cls.resources, Resources):
            raise PhotonDefinitionError(
                f"{cls.__name__}.resources must be nubis.Resources(...), not {cls.resources!r}"
            )
        if isinstance(cls.requirements, str) or not all(
            isinstance(r, str) for r in cls.requirements
        ):
            raise PhotonDefinitionError(f"{cls.__name__}.requirements must be a list of strings")
        if cls.__dict__.get("name") is not None and not _NAME.match(str(cls.name)):
            raise PhotonDefinitionError(
                f"{cls.__name__}.name {cls.name!r}: use lower-case letters, digits and '-'"
            )
        cls.handlers = _collect_handlers(cls)

    @classmethod
    def photon_name(cls) -> str:
        if cls.name:
            return cls.name
        return re.sub(r"[^a-z0-9\-]", "-", cls.__name__.lower()).strip("-")[:63] or "photon"

    @classmethod
    def handler_infos(cls) -> list[HandlerInfo]:
        return [spec.info() for spec in cls.handlers.values()]

    def init(self) -> None:
        """Load models and other state. Runs once, before the photon reports ready."""

    def shutdown(self) -> None:
        """Release resources. Runs once, after in-flight requests finished."""

    def collectors(self) -> Iterable[Collector]:
        """Prometheus collectors (a ``CollectorRegistry`` is one) served on this photon's
        ``/metrics`` next to nubis's own; asked at each scrape once ``init()`` has finished."""
        return ()


def _collect_handlers(cls: type[Photon]) -> dict[str, HandlerSpec]:
    specs: dict[str, HandlerSpec] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if isinstance(value, Handler):
                specs[attr] = value.build_spec(attr, cls)
            elif attr in specs:  # a subclass replaced a handler with a plain attribute
                del specs[attr]
    seen: dict[tuple[str, str], str] = {}
    for spec in specs.values():
        key = (spec.options.method, spec.path)
        if key in seen:
            raise PhotonDefinitionError(
                f"{cls.__name__}: handlers {seen[key]!r} and {spec.name!r} both serve "
                f"{spec.options.method} {spec.path}"
            )
        seen[key] = spec.name
    return specs
