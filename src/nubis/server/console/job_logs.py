"""The log lines of several ranks of a job on one event stream (a browser opens at most six
connections to a host: one stream per rank would stall a page of a job with many workers).

Each rank's follower (``services.jobs.follow_logs``: through retries, until the job ends) runs as
its own task into one queue; what has arrived is sent together, one ``rank-N`` event per rank with
the new lines as escaped ``<div>``s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from markupsafe import escape

from nubis.server.console.live import sse
from nubis.server.context import ServerContext
from nubis.server.services import jobs

log = logging.getLogger("nubis.console")
QUEUE = 2000
BATCH = 500
KEEP_ALIVE_S = 15.0
KEEP_ALIVE = ": keep-alive\n\n"
"""An SSE comment (browsers ignore it): while no rank writes, it lets the stream's guard check the
session again and keeps idle connections open through proxies."""


def line_html(line: str) -> str:
    return f"<div>{escape(line.replace(chr(13), ''))}</div>"


async def follow_ranks(ctx: ServerContext, job_id: str, ranks: list[int], *, tail: int) -> AsyncIterator[str]:
    queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue(maxsize=QUEUE)

    async def pump(rank: int) -> None:
        try:
            async for line in jobs.follow_logs(ctx, job_id, worker=rank, tail=tail):
                await queue.put((rank, line))
        except Exception:  # one rank's failure ends its pane, not the others
            log.exception("following rank %d of job %s", rank, job_id)
        finally:
            await queue.put(None)  # the end of this rank (the consumer drains the queue meanwhile)

    tasks = [asyncio.create_task(pump(rank)) for rank in ranks]
    try:
        running = len(tasks)
        while running:
            try:
                batch = [await asyncio.wait_for(queue.get(), KEEP_ALIVE_S)]
            except TimeoutError:  # quiet (a queued job): a comment, so that the session is checked again
                yield KEEP_ALIVE
                continue
            while not queue.empty() and len(batch) < BATCH:
                batch.append(queue.get_nowait())
            running -= batch.count(None)
            by_rank: dict[int, list[str]] = {}
            for item in batch:
                if item is not None:
                    by_rank.setdefault(item[0], []).append(line_html(item[1]))
            for rank, lines in by_rank.items():
                yield sse(f"rank-{rank}", "".join(lines))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
