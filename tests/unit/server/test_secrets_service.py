"""decrypt_for_workload: the one way back to plaintext, for workloads, never for the API."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

import nubis.server.routers
from nubis.errors import NubisError, ValidationError
from nubis.models.auth import Role
from nubis.server.db import Database
from nubis.server.deps import Caller
from nubis.server.orm import SecretRow, WorkspaceRow
from nubis.server.security import SecretBox
from nubis.server.services import secrets


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'unit.db'}")
    await database.migrate()
    async with database.sessions() as session:
        session.add_all([WorkspaceRow(id="w" * 32, name="alpha"), WorkspaceRow(id="v" * 32, name="beta")])
        await session.commit()
    yield database
    await database.dispose()


def caller(workspace_id: str, workspace: str) -> Caller:
    return Caller(token_id="t" * 32, token_name="unit", role=Role.member, superuser=False,
                  workspace_id=workspace_id, workspace=workspace)


ALPHA = caller("w" * 32, "alpha")
BETA = caller("v" * 32, "beta")


async def test_returns_every_secret_of_one_workspace(db: Database) -> None:
    box = SecretBox(os.urandom(32))
    async with db.sessions() as session:
        await secrets.set_secret(session, ALPHA, box, "HF_TOKEN", "hf-123")
        await secrets.set_secret(session, ALPHA, box, "DB_URL", "postgres://u:p@h/db")
        await secrets.set_secret(session, ALPHA, box, "HF_TOKEN", "hf-456 ünïcode")
        await secrets.set_secret(session, BETA, box, "HF_TOKEN", "beta")
        assert await secrets.decrypt_for_workload(session, box, ALPHA.workspace_id) == {
            "DB_URL": "postgres://u:p@h/db", "HF_TOKEN": "hf-456 ünïcode"}
        assert await secrets.decrypt_for_workload(session, box, BETA.workspace_id) == {"HF_TOKEN": "beta"}
        assert await secrets.decrypt_for_workload(session, box, "x" * 32) == {}


async def test_each_set_uses_a_fresh_nonce(db: Database) -> None:
    box = SecretBox(os.urandom(32))
    async with db.sessions() as session:
        await secrets.set_secret(session, ALPHA, box, "A", "same")
        first = await session.scalar(select(SecretRow.nonce))
        await secrets.set_secret(session, ALPHA, box, "A", "same")
        second = await session.scalar(select(SecretRow.nonce))
    assert first != second


async def test_a_ciphertext_moved_to_another_name_does_not_decrypt(db: Database) -> None:
    box = SecretBox(os.urandom(32))
    async with db.sessions() as session:
        await secrets.set_secret(session, ALPHA, box, "PUBLIC", "harmless")
        await secrets.set_secret(session, ALPHA, box, "PRIVATE", "precious")
        rows = {r.name: r for r in (await session.scalars(select(SecretRow))).all()}
        rows["PUBLIC"].nonce, rows["PUBLIC"].ciphertext = rows["PRIVATE"].nonce, rows["PRIVATE"].ciphertext
        await session.commit()
        with pytest.raises(NubisError, match="secret 'PUBLIC' cannot be decrypted"):
            await secrets.decrypt_for_workload(session, box, ALPHA.workspace_id)


async def test_another_master_key_cannot_decrypt(db: Database) -> None:
    async with db.sessions() as session:
        await secrets.set_secret(session, ALPHA, SecretBox(os.urandom(32)), "HF_TOKEN", "v")
        with pytest.raises(NubisError, match="the master key changed"):
            await secrets.decrypt_for_workload(session, SecretBox(os.urandom(32)), ALPHA.workspace_id)


@pytest.mark.parametrize("name", ["HF_TOKEN", "_x", "a1", "A" * 128])
def test_env_var_names_are_accepted(name: str) -> None:
    secrets.check_name(name)


@pytest.mark.parametrize("name", ["", "1A", "A-B", "A.B", "A B", "A" * 129, "Ä"])
def test_other_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="invalid secret name"):
        secrets.check_name(name)


def test_no_router_can_decrypt() -> None:
    routers = Path(nubis.server.routers.__file__).parent
    for source in routers.glob("*.py"):
        text = source.read_text()
        assert "decrypt" not in text, f"{source.name} must not decrypt secrets"
