"""The `flux-mcp` command: serve MCP (stdio or HTTP), run the offline demo, or run the emulator.

flux-mcp                         serve MCP over stdio (what desktop hosts run)
flux-mcp --sandbox               the same, against a built-in offline emulator (no token, no network)
flux-mcp serve --transport http  serve MCP over streamable HTTP at /mcp
flux-mcp demo "a white cat"      one full round trip, offline by default; saves the image
flux-mcp demo --edit PATH "..."  the same for an edit of a local image
flux-mcp demo --video "..."      the same for a short video (an MP4, saved)
flux-mcp emulator --port 8765    run the Flux API emulator alone
flux-mcp doctor                  check Python, packages, settings, token and the upstream
flux-mcp config cursor           print a ready-to-paste config for an MCP host (--sandbox: offline)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp_types import CallToolResult, TextContent
from pydantic import ValidationError

from flux_mcp import __version__
from flux_mcp.cli import hostconfig, report
from flux_mcp.cli.logs import configure_logging, configure_warnings
from flux_mcp.cli.telemetry import configure_tracing
from flux_mcp.domain.catalogue import MODELS
from flux_mcp.domain.errors import StartupError
from flux_mcp.domain.settings import Settings
from flux_mcp.server.build import build_server
from flux_mcp.server.stdio import serve_stdio, stdin_ended_by_signals

logger = logging.getLogger("flux_mcp")

SANDBOX_LATENCY = 3.0  # seconds an offline job takes: long enough to see progress, short enough to wait
EXAMPLES = """\
examples:
  flux-mcp                                  serve over stdio (configure this in your MCP host)
  flux-mcp --sandbox                        serve over stdio against the offline emulator
  flux-mcp demo "a white siamese cat"       offline round trip, saves the image
  flux-mcp demo "a lighthouse" --live       the same against the real API (needs ACEDATACLOUD_API_TOKEN)
  flux-mcp demo --edit ~/Pictures/cat.jpg "make it a watercolor"   edit a local image, offline
  flux-mcp demo --video "a paper boat on a rainy street"            a short MP4, offline
  flux-mcp serve --transport http --port 8000
  flux-mcp emulator --port 8765 --latency 5
  flux-mcp doctor                           check token, network, settings; says how to fix each problem
  flux-mcp report --since 30d --by person   who spent what (jobs, images, videos, credits) from the history
  flux-mcp config claude-desktop            config for a host (or claude-code, cursor, vscode, windsurf,
                                            gemini, codex); add --sandbox to try it without a token
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "doctor":  # reads the settings itself: invalid settings are one of its checks
        from flux_mcp.cli import doctor

        return doctor.main()
    if args.command == "config":
        return hostconfig.main(args.target_host, sandbox=args.sandbox or args.config_sandbox)
    command = args.command or "serve"
    try:
        settings = _settings(command, args)
    except ValidationError as exc:
        print(f"flux-mcp: invalid settings: {exc}", file=sys.stderr)
        return 2
    # The demo shows its own progress; the report is its own output.
    quiet = command in ("demo", "report") and "FLUX_MCP_LOG_LEVEL" not in os.environ
    configure_logging("WARNING" if quiet else settings.log_level)
    configure_warnings()
    if command == "serve":
        configure_tracing(os.environ)
    try:
        if command == "demo":
            return anyio.run(_demo, settings, args)
        if command == "report":
            return anyio.run(report.run, settings, args)
        if command == "emulator":
            from flux_mcp.emulator import EmulatorConfig, run_emulator_forever

            run_emulator_forever(EmulatorConfig(latency=args.latency), host=args.host, port=args.port)
            return 0
        return anyio.run(_serve, settings, args)
    except KeyboardInterrupt:
        return 130
    except (StartupError, BaseExceptionGroup) as exc:  # a lifespan's refusal reaches here inside groups
        refusal = _refusal(exc)
        if refusal is None:
            raise
        print(f"flux-mcp: {refusal}", file=sys.stderr)
        return 1


def _refusal(exc: BaseException) -> StartupError | None:
    """The StartupError that ended the server, however deep in exception groups it arrived."""
    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        return next((found for inner in exc.exceptions if (found := _refusal(inner)) is not None), None)
    return None


def _settings(command: str, args: argparse.Namespace) -> Settings:
    """The settings from the environment, with the HTTP serving options of the command line applied.

    Only the command line: the HTTP defaults (not saving images, say) are build_http_app's.
    """
    settings = Settings()
    if command != "serve" or args.transport != "http":
        return settings
    return settings.with_changes(
        host=settings.host if args.host is None else args.host,
        port=settings.port if args.port is None else args.port,  # 0 too: the OS chooses a port
        stateless=args.stateless or settings.stateless,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flux-mcp",
        description="MCP server for Flux image generation (AceDataCloud Flux API).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flux-mcp {__version__}")
    _add_serve_options(parser)
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="serve MCP (stdio by default)")
    # The same options after `serve`; suppressed defaults, so options given before it still count.
    _add_serve_options(serve, default=argparse.SUPPRESS)

    demo = commands.add_parser("demo", help="one full round trip: submit, wait with progress, save the image")
    demo.add_argument("prompt", nargs="?", default="a white siamese cat", help="what to draw")
    demo.add_argument("--model", default=None, choices=sorted(MODELS), help="Flux model")
    demo.add_argument(
        "--edit", metavar="PATH", default=None, help="edit this local image (PNG, JPEG or WebP) instead"
    )
    demo.add_argument("--video", action="store_true", help="make a short video (MP4) instead of an image")
    demo.add_argument("--live", action="store_true", help="use the real API (needs ACEDATACLOUD_API_TOKEN)")
    demo.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the image (default ./flux-mcp-demo, or with --live the configured output folder)",
    )
    demo.add_argument("--latency", type=float, default=3.0, help="offline job duration in seconds")

    commands.add_parser("doctor", help="check Python, packages, settings, token and the upstream")
    report.add_report_parser(commands)
    config = commands.add_parser("config", help="print a ready-to-paste config for an MCP host")
    config.add_argument(
        "target_host", metavar="HOST", choices=hostconfig.HOSTS, help=" | ".join(hostconfig.HOSTS)
    )
    config.add_argument(
        "--sandbox",
        dest="config_sandbox",
        action="store_true",
        help="a config that runs `flux-mcp --sandbox` (offline emulator, no token needed)",
    )

    emulator = commands.add_parser("emulator", help="run the Flux API emulator on loopback")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument("--latency", type=float, default=5.0, help="seconds each job takes")
    return parser


def _add_serve_options(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """The serving options; `default` replaces every default (argparse.SUPPRESS on the subcommand)."""

    def pick(value: Any) -> Any:
        return value if default is None else default

    parser.add_argument("--transport", choices=["stdio", "http"], default=pick("stdio"), help="MCP transport")
    parser.add_argument(
        "--host", default=pick(None), help="HTTP bind address (FLUX_MCP_HOST, default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=pick(None),
        help="HTTP port (FLUX_MCP_PORT, default 8000; 0: any free port, logged)",
    )
    parser.add_argument(
        "--stateless",
        action="store_true",
        default=pick(False),
        help="HTTP without server-side sessions, for several replicas",
    )
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        default=pick(False),
        help="allow a non-loopback bind with FLUX_MCP_AUTH=none or passthrough (only behind a proxy that "
        "authenticates users)",
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        default=pick(False),
        help="serve against a built-in offline Flux emulator (no token needed)",
    )


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    if args.transport == "http":
        await _serve_http(settings, args)
        return 0
    return await _serve_stdio(settings, args)


async def _serve_stdio(settings: Settings, args: argparse.Namespace) -> int:
    """Until stdin ends, or SIGINT/SIGTERM end it: 0, or 128 + the signal's number, as shells report it."""
    with stdin_ended_by_signals() as stop:
        async with _upstream(settings, sandbox=args.sandbox, latency=SANDBOX_LATENCY) as effective:
            await serve_stdio(build_server(effective), stop)
    if stop.received is None:
        return 0
    logger.info("stopped by %s", signal.Signals(stop.received).name)
    return 128 + stop.received


async def _serve_http(settings: Settings, args: argparse.Namespace) -> None:
    async with _upstream(settings, sandbox=args.sandbox, latency=SANDBOX_LATENCY) as effective:
        from flux_mcp.web.app import serve_http

        try:
            await serve_http(effective, allow_unauthenticated=args.allow_unauthenticated)
        except StartupError as exc:
            raise SystemExit(f"flux-mcp: {exc}") from None


@asynccontextmanager
async def _upstream(
    settings: Settings, *, sandbox: bool, latency: float, images: Path | None = None
) -> AsyncIterator[Settings]:
    """The settings to serve with: as given, or pointed at the offline sandbox (see flux_mcp.cli.sandbox)."""
    if not sandbox:
        yield settings
        return
    from flux_mcp.cli.sandbox import serve_sandbox

    async with serve_sandbox(settings, latency=latency, images=images) as effective:
        yield effective


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    if args.live and settings.api_token is None:
        print("flux-mcp demo --live needs ACEDATACLOUD_API_TOKEN set in the environment.", file=sys.stderr)
        return 1
    out = args.out if args.out is not None else (settings.output_dir if args.live else Path("flux-mcp-demo"))
    settings = settings.with_changes(save=True, output_dir=out)
    if args.edit is not None:  # the file named on the command line may be read, wherever it is
        folders = [*settings.input_folders(), Path(_demo_call(args)[1]["image_url"]).parent]
        settings = settings.with_changes(input_dirs=os.pathsep.join(map(str, folders)))
    async with _upstream(settings, sandbox=not args.live, latency=args.latency, images=out) as effective:
        server = build_server(effective)
        where = "the real Flux API" if args.live else "the offline emulator"
        tool, arguments = _demo_call(args)
        doing = f"Editing {args.edit}" if args.edit else "Generating"
        model = arguments.get("model", "flux-3")
        print(f"{doing} {args.prompt!r} with {model} on {where}…", file=sys.stderr)
        from mcp import Client

        async with Client(server) as client:
            result = await client.call_tool(tool, arguments, progress_callback=_print_progress)
            while _status(result) == "pending":
                task_id = _structured(result)["task_id"]
                result = await client.call_tool(
                    "get_task", {"task_id": task_id}, progress_callback=_print_progress
                )
        print(file=sys.stderr)
        if result.is_error:
            print(f"Failed: {_text(result)}", file=sys.stderr)
            return 1
        data = _structured(result)
        if data.get("kind") == "video":
            return _report_video(data, _text(result))
        image = data["images"][0]
        if not image.get("path"):
            print(f"Generated {image['url']} but could not save it: {image.get('warning')}", file=sys.stderr)
            return 1
        print(f"status: {data['status']}  task_id: {data['task_id']}")
        print(f"model: {data['model']}  size: {data['size'] or 'default'}  seed: {image.get('seed')}")
        print(f"image: {image['url']}")
        print(f"saved: {image['path']}")
        return 0


def _report_video(data: dict[str, Any], summary: str) -> int:
    video = data["videos"][0]
    if not video.get("path"):
        print(f"Generated {video['url']} but could not save it: {video.get('warning')}", file=sys.stderr)
        return 1
    print(f"status: {data['status']}  task_id: {data['task_id']}")
    shape = f"{video.get('width')}x{video.get('height')}  {video.get('fps')} fps"
    print(f"model: {data['model']}  {video.get('seconds')} s  {shape}  {video.get('size_bytes')} bytes")
    print(f"video: {video['url']}")
    print(f"saved: {video['path']}")
    if "no poster frame" in summary:
        print("poster: none (pip install 'flux-mcp[video]' for one)")
    return 0


def _demo_call(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The demo's one tool call: generate_image, edit_image of a local file (an absolute path), or a video."""
    if args.video:
        if args.edit is not None:
            raise SystemExit("flux-mcp demo: choose --video or --edit, not both")
        return "generate_video", {"prompt": args.prompt}
    if args.edit is None:
        return "generate_image", {"prompt": args.prompt, "model": args.model or "flux-dev"}
    path = str(Path(args.edit).expanduser().absolute())
    return "edit_image", {"prompt": args.prompt, "image_url": path, "model": args.model or "flux-kontext-pro"}


async def _print_progress(progress: float, total: float | None, message: str | None) -> None:
    print(f"\r  [{progress:5.1f} s] {message or ''}"[:100].ljust(100), end="", file=sys.stderr, flush=True)


def _structured(result: CallToolResult) -> dict[str, Any]:
    return result.structured_content or {}


def _status(result: CallToolResult) -> str | None:
    status = _structured(result).get("status")
    return status if isinstance(status, str) else None


def _text(result: CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


if __name__ == "__main__":
    sys.exit(main())
