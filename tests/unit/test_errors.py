"""The error contract: stable codes and statuses, bodies, rebuilding on the client."""

import pytest

from nubis import errors
from nubis.errors import NubisError, error_class_for, error_from_body

CONTRACT = [
    (errors.NubisError, "internal_error", 500),
    (errors.BadRequestError, "bad_request", 400),
    (errors.UnauthorizedError, "unauthorized", 401),
    (errors.ForbiddenError, "forbidden", 403),
    (errors.IsolationUnavailableError, "isolation_unavailable", 403),
    (errors.CSRFError, "csrf_failed", 403),
    (errors.NotFoundError, "not_found", 404),
    (errors.MethodNotAllowedError, "method_not_allowed", 405),
    (errors.ConflictError, "conflict", 409),
    (errors.NoCapacityError, "no_capacity", 409),
    (errors.EnvironmentPendingError, "environment_pending", 409),
    (errors.PayloadTooLargeError, "payload_too_large", 413),
    (errors.HeadersTooLargeError, "headers_too_large", 431),
    (errors.UnsupportedMediaTypeError, "unsupported_media_type", 415),
    (errors.ValidationError, "validation_error", 422),
    (errors.HandlerError, "handler_error", 500),
    (errors.NotReadyError, "not_ready", 503),
    (errors.HandlerTimeoutError, "timeout", 504),
    (errors.PhotonDefinitionError, "photon_definition_error", 400),
    (errors.PhotonLoadError, "photon_load_error", 400),
    (errors.BundleError, "invalid_bundle", 422),
    (errors.ConnectionFailedError, "connection_failed", 503),
    (errors.BackupFailedError, "backup_failed", 500),
    (errors.BackupDamagedError, "backup_damaged", 422),
    (errors.BackupKeyError, "backup_key_mismatch", 403),
    (errors.BackupTooNewError, "backup_too_new", 422),
    (errors.RestoreTargetNotEmptyError, "restore_target_not_empty", 409),
]


@pytest.mark.parametrize(("cls", "code", "status"), CONTRACT)
def test_codes_and_statuses_are_stable(cls: type[NubisError], code: str, status: int) -> None:
    assert cls.code == code
    assert cls.http_status == status
    assert error_class_for(code) is cls


def test_every_error_class_is_in_the_contract() -> None:
    def subclasses(cls: type) -> set[type]:
        return {cls} | {s for sub in cls.__subclasses__() for s in subclasses(sub)}

    assert subclasses(NubisError) >= {cls for cls, _, _ in CONTRACT}
    public = {
        value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, NubisError)
    }
    assert public == {cls for cls, _, _ in CONTRACT}


def test_body_shape() -> None:
    exc = errors.ValidationError("bad x", details=[{"field": "x"}])
    assert exc.to_body() == {
        "error": {"code": "validation_error", "message": "bad x", "details": [{"field": "x"}]}
    }
    assert str(exc) == "bad x"


def test_message_defaults_to_the_code() -> None:
    exc = errors.NotFoundError()
    assert exc.message == "not_found"
    assert exc.to_body() == {"error": {"code": "not_found", "message": "not_found", "details": None}}


@pytest.mark.parametrize(("cls", "code", "status"), CONTRACT)
def test_error_from_body_rebuilds_the_same_class(cls: type[NubisError], code: str, status: int) -> None:
    original = cls("it broke", details={"k": [1]})
    rebuilt = error_from_body(status, original.to_body())
    assert type(rebuilt) is cls
    assert rebuilt.message == "it broke"
    assert rebuilt.details == {"k": [1]}
    assert rebuilt.http_status == status
    assert rebuilt.to_body() == original.to_body()


def test_error_from_body_keeps_an_unknown_code() -> None:
    body = {"error": {"code": "quota_exceeded", "message": "too many", "details": {"limit": 3}}}
    exc = error_from_body(429, body)
    assert type(exc) is NubisError
    assert exc.code == "quota_exceeded"
    assert exc.http_status == 429
    assert exc.to_body() == body
    assert NubisError.code == "internal_error"  # the class itself is untouched
    assert NubisError.http_status == 500


def test_error_from_body_keeps_the_status_it_came_with() -> None:
    exc = error_from_body(502, {"error": {"code": "not_found", "message": "gone"}})
    assert isinstance(exc, errors.NotFoundError)
    assert exc.http_status == 502
    assert errors.NotFoundError.http_status == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("upstream exploded", "HTTP 502: upstream exploded"),
        ({"detail": "x"}, "HTTP 502: {'detail': 'x'}"),
        ({"error": "flat"}, "HTTP 502: {'error': 'flat'}"),
        ("x" * 600, "HTTP 502: " + "x" * 500),
    ],
)
def test_error_from_a_foreign_body(body: object, message: str) -> None:
    exc = error_from_body(502, body)
    assert type(exc) is NubisError
    assert exc.code == "internal_error"
    assert exc.message == message
    assert exc.http_status == 502
