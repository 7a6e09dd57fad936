"""``edgeward.runtime.shield_task``: step 8's task outlives a caller that was cancelled (docs/replay.md)."""

from __future__ import annotations

import asyncio

import pytest

from edgeward.runtime import shield_task


async def test_the_answer_is_the_work_s_result_or_its_exception() -> None:
    async def ok() -> str:
        return "answer"

    async def fails() -> str:
        raise ValueError("backend")

    loop = asyncio.get_running_loop()
    assert await shield_task(loop.create_task(ok())) == "answer"
    with pytest.raises(ValueError, match="backend"):
        await shield_task(loop.create_task(fails()))


async def test_a_cancelled_caller_leaves_the_work_running_to_its_end() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def backend_call() -> str:
        started.set()
        await release.wait()
        return "kept"

    work = asyncio.get_running_loop().create_task(backend_call())

    async def handler() -> str:  # the gRPC handler's task, which gRPC cancels when the client leaves
        return await shield_task(work)

    caller = asyncio.get_running_loop().create_task(handler())
    await started.wait()  # both tasks have taken their first step: the caller awaits the answer
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not work.done()
    release.set()
    assert await work == "kept"


async def test_cancelled_work_cancels_the_answer() -> None:
    work = asyncio.get_running_loop().create_task(asyncio.Event().wait())
    answer = shield_task(work)
    work.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answer
