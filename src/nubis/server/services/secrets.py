"""Secrets: AES-GCM with the master key, stored only encrypted, never returned over the API.

The associated data binds each ciphertext to its workspace and name, so a ciphertext copied onto
another row (or into another workspace) does not decrypt. Only :func:`decrypt_for_workload`
decrypts; no route calls it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.errors import NotFoundError, NubisError, ValidationError
from nubis.models.secrets import SECRET_NAME_PATTERN, SECRET_NAME_RULE, Secret, is_valid_secret_name
from nubis.server.deps import Caller
from nubis.server.orm import SecretRow
from nubis.server.security import SecretBox
from nubis.server.services import audit


def associated_data(workspace_id: str, name: str) -> bytes:
    return f"nubis-secret\0{workspace_id}\0{name}".encode()


def check_name(name: str) -> None:
    if not is_valid_secret_name(name):
        raise ValidationError(
            f"invalid secret name {name[:200]!r}: {SECRET_NAME_RULE}",
            details=[{"field": "name", "message": f"must match {SECRET_NAME_PATTERN}",
                      "type": "secret_name"}],
        )


def to_model(row: SecretRow) -> Secret:
    return Secret(name=row.name, created_at=row.created_at, updated_at=row.updated_at)


async def _get(session: AsyncSession, workspace_id: str, name: str) -> SecretRow | None:
    return await session.scalar(
        select(SecretRow).where(SecretRow.workspace_id == workspace_id, SecretRow.name == name)
    )


async def set_secret(
    session: AsyncSession, caller: Caller, box: SecretBox, name: str, value: str
) -> Secret:
    """Create the secret, or replace its value (a new nonce each time) and bump ``updated_at``."""
    check_name(name)
    nonce, ciphertext = box.encrypt(value.encode(), associated_data(caller.workspace_id, name))
    now = datetime.now(UTC)
    for _ in range(2):  # a concurrent first set of the same name: the loser updates instead
        row = await _get(session, caller.workspace_id, name)
        created = row is None
        if row is None:
            row = SecretRow(workspace_id=caller.workspace_id, name=name, created_at=now)
            session.add(row)
        row.nonce, row.ciphertext, row.updated_at = nonce, ciphertext, now
        audit.record(session, caller, "secret.set", name, {"created": created})
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            continue
        return to_model(row)
    raise NubisError(f"secret {name!r} is being set concurrently; try again")


async def list_secrets(session: AsyncSession, caller: Caller) -> list[Secret]:
    """Names and dates only: the ciphertexts are not even loaded."""
    rows = (await session.execute(
        select(SecretRow.name, SecretRow.created_at, SecretRow.updated_at)
        .where(SecretRow.workspace_id == caller.workspace_id).order_by(SecretRow.name)
    )).all()
    return [Secret.model_construct(name=name, created_at=created, updated_at=updated)  # trusted rows
            for name, created, updated in rows]


async def delete(session: AsyncSession, caller: Caller, name: str) -> None:
    check_name(name)
    row = await _get(session, caller.workspace_id, name)
    if row is None:
        raise NotFoundError(f"secret {name!r} not found in workspace {caller.workspace!r}")
    await session.delete(row)
    audit.record(session, caller, "secret.delete", name)
    await session.commit()


async def check_exist(session: AsyncSession, caller: Caller, names: list[str]) -> None:
    """422 naming the secrets a spec asks for that the caller's workspace does not have."""
    if not names:
        return
    found = set((await session.scalars(
        select(SecretRow.name).where(SecretRow.workspace_id == caller.workspace_id, SecretRow.name.in_(names))
    )).all())
    missing = sorted(set(names) - found)
    if missing:
        raise ValidationError(
            f"secrets {missing} do not exist in workspace {caller.workspace!r}: "
            "set them with `nubis secret set NAME`"
        )


async def decrypt_for_workload(
    session: AsyncSession, box: SecretBox, workspace_id: str
) -> dict[str, str]:
    """Every secret of a workspace in plaintext, for injecting into its workloads' environment.

    Server-internal: never call it from a route.
    """
    rows = (await session.scalars(
        select(SecretRow).where(SecretRow.workspace_id == workspace_id).order_by(SecretRow.name)
    )).all()
    values: dict[str, str] = {}
    for row in rows:
        try:
            plain = box.decrypt(row.nonce, row.ciphertext, associated_data(workspace_id, row.name))
        except InvalidTag:
            raise NubisError(
                f"secret {row.name!r} cannot be decrypted: the master key changed or the row was "
                "tampered with; set the secret again"
            ) from None
        values[row.name] = plain.decode()
    return values
