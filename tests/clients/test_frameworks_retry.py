"""A framework that times a call out on its own clock must not make the user pay twice (issue 13 §1).

openai-agents gives up on an MCP call after 5 s by default and tells its model "Please try again.";
pydantic-ai, with a short `read_timeout`, asks its model to retry. The job was submitted (and billed)
all the same. The model's identical retry must continue that task, not submit a second one: in the
same session, and from a new stdio process (frameworks often start one per call). Submissions are
counted in the emulator's own records.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flux_mcp.emulator import RunningEmulator
from tests.support.frameworks import (
    OpenAIAgents,
    PydanticAI,
    Script,
    Seen,
    http_endpoint,
    repeat_until_images,
    stdio_endpoint,
)

pytestmark = [pytest.mark.anyio, pytest.mark.frameworks]

CALL = ("generate_image", {"prompt": "a lighthouse at dusk, long exposure"})


def check_one_task_and_its_images(tries: list[Seen], emulator: RunningEmulator) -> None:
    timed_out, *_, answered = tries
    assert not timed_out.images and "Generated" not in timed_out.text, timed_out.text  # the premise
    submitted, paid = list(emulator.state.tasks), emulator.state.submissions
    assert paid == 1, (
        f"one request, retried {len(tries) - 1} times after client timeouts, was submitted {paid} times "
        "(each billed). The model saw: " + " | ".join(seen.text[:120] for seen in tries)
    )
    assert answered.images and answered.task_id() == submitted[0], answered.text


@pytest.mark.subprocess
async def test_openai_agents_retry_after_its_default_timeout_continues_the_task(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    framework = OpenAIAgents()
    emulator.state.config.latency = 7.0  # longer than openai-agents' default 5 s call timeout
    endpoint = stdio_endpoint(emulator, tmp_path)  # the server's own default wait (45 s)
    async with framework.server(endpoint) as server:  # no timeout given: the framework's default
        assert server.client_session_timeout_seconds == 5
        script = Script(*repeat_until_images(CALL, attempts=3))
        await framework.run(server, script)
    check_one_task_and_its_images(script.seen, emulator)


@pytest.mark.subprocess
async def test_openai_agents_retry_from_a_new_process_continues_the_task(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    framework = OpenAIAgents()
    emulator.state.config.latency = 3.5
    endpoint = stdio_endpoint(emulator, tmp_path)  # both processes share the history file
    first = Script(CALL)
    await framework.converse(endpoint, first, client_session_timeout_seconds=2)
    retry = Script(*repeat_until_images(CALL, attempts=3))
    await framework.converse(endpoint, retry, client_session_timeout_seconds=2)
    check_one_task_and_its_images(first.seen + retry.seen, emulator)


async def test_pydantic_ai_retry_after_a_short_timeout_continues_the_task(emulator: RunningEmulator) -> None:
    framework = PydanticAI()
    emulator.state.config.latency = 3.0
    # Without MCP Tasks: with fastmcp-tasks installed, pydantic-ai's client would poll a task instead, and
    # give up after its 2 s read timeout.
    async with http_endpoint(emulator, wait_seconds=30, tasks=False) as endpoint:
        script = Script(*repeat_until_images(CALL, attempts=5))
        await framework.converse(endpoint, script, read_timeout=2, max_retries=5)
    check_one_task_and_its_images(script.seen, emulator)
