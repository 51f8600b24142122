"""Measurement 4: bytes the model receives for one image, with each server's defaults.

The size is that of the serialized tool result (`CallToolResult` as JSON, by alias, without nulls):
what a host hands the model. flux-mcp answers once with the image (text, inline preview, resource
link, structured content). The vendor answers first with a task id and then, when polled, with the
task; its figure is the final answer, and all answers together.
"""

from __future__ import annotations

import json
from typing import Any

from mcp import Client
from mcp_types import CallToolResult, ImageContent, TextContent

from benchmarks import vendor as vendor_server
from benchmarks.common import (
    PROMPT,
    TOKEN,
    bench_settings,
    result_bytes,
    scratch_dir,
    stdio_transport,
    text_of,
)
from benchmarks.turns import VENDOR_ARGS
from benchmarks.upstream import serve_upstream
from flux_mcp.emulator import EmulatorConfig
from flux_mcp.server.build import build_server

TINY = 1e-6


async def measure(vendor: vendor_server.Vendor | None) -> dict[str, Any]:
    out: dict[str, Any] = {"ours": await _ours(noise=False), "ours_worst_case": await _ours(noise=True)}
    if vendor is not None:
        out["vendor"] = await _vendor(vendor)
    return out


async def _ours(*, noise: bool) -> dict[str, Any]:
    """One image with the defaults; `noise`: a colour-noise image, the worst case for the preview."""
    with scratch_dir() as scratch:
        async with serve_upstream(EmulatorConfig(latency=0.0), noise=noise) as upstream:
            settings = bench_settings(
                upstream.base_url, scratch, poll_min_seconds=TINY, poll_max_seconds=TINY
            )
            async with Client(build_server(settings)) as client:
                result = await client.call_tool("generate_image", {"prompt": PROMPT})
    return {"final_answer": breakdown(result), "all_answers_bytes": result_bytes(result), "answers": 1}


async def _vendor(vendor: vendor_server.Vendor) -> dict[str, Any]:
    async with serve_upstream(EmulatorConfig(latency=0.0)) as upstream:
        transport = stdio_transport(vendor.command, vendor_server.env(upstream.base_url, TOKEN))
        async with Client(transport, mode="legacy") as client:
            answers = [await client.call_tool("flux_generate_image", VENDOR_ARGS)]
            task = vendor_server.task_id(vendor_server.payload(text_of(answers[0])))
            answers.append(await client.call_tool("flux_get_task", {"task_id": task}))
    return {
        "final_answer": breakdown(answers[-1]),
        "all_answers_bytes": sum(result_bytes(answer) for answer in answers),
        "answers": len(answers),
    }


def breakdown(result: CallToolResult) -> dict[str, int]:
    """Total bytes, and how much of it is text, inline image data and structured content."""
    structured = result.structured_content
    return {
        "bytes": result_bytes(result),
        "text_bytes": sum(
            len(block.text.encode()) for block in result.content if isinstance(block, TextContent)
        ),
        "image_bytes": sum(len(block.data) for block in result.content if isinstance(block, ImageContent)),
        "structured_bytes": len(json.dumps(structured, separators=(",", ":")).encode()) if structured else 0,
        "blocks": len(result.content),
    }
