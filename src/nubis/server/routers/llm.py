"""/api/v1/llm: LLM deployments (a deployment of a generated OpenAI-compatible photon)."""

from __future__ import annotations

from fastapi import APIRouter

from nubis.models.llm import LLMDeployment, LLMDeployRequest
from nubis.server.deps import Context, Reader, Session, Writer
from nubis.server.services import llm

router = APIRouter(prefix="/api/v1", tags=["llm"])


@router.post("/llm", status_code=201)
async def deploy_llm(
    request: LLMDeployRequest, caller: Writer, session: Session, ctx: Context
) -> LLMDeployment:
    """Serve a language model with the OpenAI API: `<base_url>/chat/completions`, `/completions`,
    `/models`; the workspace's base URL `/<workspace>/v1` routes on the request's `model`."""
    return await llm.deploy(session, ctx, caller, request)


@router.get("/llm")
async def list_llms(caller: Reader, session: Session, ctx: Context) -> list[LLMDeployment]:
    return await llm.list_llms(session, ctx, caller)


@router.get("/llm/{name}")
async def get_llm(name: str, caller: Reader, session: Session, ctx: Context) -> LLMDeployment:
    return await llm.get(session, ctx, caller, name)
