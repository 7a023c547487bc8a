"""One error hierarchy for server, photon runtime, SDK and CLI.

Every error has a stable ``code`` (the wire contract) and an ``http_status``. Servers answer
``{"error": {"code", "message", "details"}}``; clients rebuild the same class from the code with
:func:`error_from_body`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class NubisError(Exception):
    """Base of every nubis error."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str = "", *, details: Any = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details = details

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _BY_CODE.setdefault(cls.code, cls)


_BY_CODE: dict[str, type[NubisError]] = {NubisError.code: NubisError}


class BadRequestError(NubisError):
    code = "bad_request"
    http_status = 400


class UnauthorizedError(NubisError):
    code = "unauthorized"
    http_status = 401


class ForbiddenError(NubisError):
    code = "forbidden"
    http_status = 403


class NotFoundError(NubisError):
    code = "not_found"
    http_status = 404


class CSRFError(ForbiddenError):
    """A console form or request came without this session's CSRF token (or with another one)."""

    code = "csrf_failed"
    http_status = 403


class IsolationUnavailableError(ForbiddenError):
    """Workloads cannot be sandboxed here, so members would be as powerful as admins: a second
    workspace or a non-admin token needs ``nubis up --trust-members``."""

    code = "isolation_unavailable"
    http_status = 403


class MethodNotAllowedError(NubisError):
    code = "method_not_allowed"
    http_status = 405


class ConflictError(NubisError):
    code = "conflict"
    http_status = 409


class NoCapacityError(ConflictError):
    """A backend cannot fit the requested resources now; ``message`` says what is short."""

    code = "no_capacity"
    http_status = 409


class EnvironmentPendingError(NoCapacityError):
    """A replica's environment (a virtualenv for its requirements) is still being built: retry later."""

    code = "environment_pending"


class PayloadTooLargeError(NubisError):
    code = "payload_too_large"
    http_status = 413


class HeadersTooLargeError(NubisError):
    """The request's headers are over the server's size or count limit (answered before parsing
    anything else)."""

    code = "headers_too_large"
    http_status = 431


class UnsupportedMediaTypeError(NubisError):
    code = "unsupported_media_type"
    http_status = 415


class ValidationError(NubisError):
    """The request's fields are wrong or missing; ``details`` lists each field."""

    code = "validation_error"
    http_status = 422


class HandlerError(NubisError):
    """The user's handler raised."""

    code = "handler_error"
    http_status = 500


class NotReadyError(NubisError):
    """The photon is still running ``init()`` (or is shutting down)."""

    code = "not_ready"
    http_status = 503


class HandlerTimeoutError(NubisError):
    code = "timeout"
    http_status = 504


class PhotonDefinitionError(NubisError):
    """A photon class is written wrongly (raised at definition or load time, never over HTTP)."""

    code = "photon_definition_error"
    http_status = 400


class PhotonLoadError(NubisError):
    """A photon file, folder or bundle cannot be found or imported."""

    code = "photon_load_error"
    http_status = 400


class BundleError(NubisError):
    """A bundle is malformed: missing manifest, wrong hash, unsafe paths."""

    code = "invalid_bundle"
    http_status = 422


class BackupFailedError(NubisError):
    """A backup or a restore could not run: the database or a tool it needs (pg_dump) failed."""

    code = "backup_failed"
    http_status = 500


class BackupDamagedError(NubisError):
    """A backup archive is not what its manifest and checksum say: truncated, changed or not one."""

    code = "backup_damaged"
    http_status = 422


class BackupKeyError(NubisError):
    """The master key offered (or the passphrase that unwraps it) is not the backup's."""

    code = "backup_key_mismatch"
    http_status = 403


class BackupTooNewError(NubisError):
    """The backup was made by a newer nubis whose database schema this version does not know."""

    code = "backup_too_new"
    http_status = 422


class RestoreTargetNotEmptyError(ConflictError):
    """A restore writes only into an empty home, storage and database."""

    code = "restore_target_not_empty"
    http_status = 409


class ConnectionFailedError(NubisError):
    """The client could not reach the server."""

    code = "connection_failed"
    http_status = 503


def error_class_for(code: str) -> type[NubisError]:
    return _BY_CODE.get(code, NubisError)


def error_from_body(status: int, body: Any) -> NubisError:
    """Rebuild the typed exception a server described in its error body."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code", ""))
        cls = error_class_for(code)
        exc = cls(str(err.get("message", "")), details=err.get("details"))
        if cls is NubisError and code:
            exc.code = code  # type: ignore[misc]  # unknown code from a newer server: keep it
        exc.http_status = status  # type: ignore[misc]
        return exc
    text = body if isinstance(body, str) else repr(body)
    exc = NubisError(f"HTTP {status}: {text[:500]}")
    exc.http_status = status  # type: ignore[misc]
    return exc
