"""The bare FastAPI app bench/serving.py compares nubis against: the echo handlers, as a user
would write them without nubis.

    uvicorn bench.baseline_fastapi:app --no-access-log --log-level warning
"""

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="echo (bare FastAPI)")


class EchoRequest(BaseModel):
    text: str


@app.post("/echo")
def echo(req: EchoRequest) -> dict[str, str]:
    """Sync endpoint: FastAPI runs it in anyio's thread pool."""
    return {"text": req.text}


@app.post("/aecho")
async def aecho(req: EchoRequest) -> dict[str, str]:
    """Async endpoint: runs on the event loop."""
    return {"text": req.text}
