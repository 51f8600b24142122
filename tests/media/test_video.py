"""generate_video against the emulator over loopback HTTP: modes, refusals, waiting, files, posters."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from mcp import Client
from mcp_types import ImageContent, ResourceLink
from pydantic import ValidationError

from flux_mcp.domain.errors import VideoError
from flux_mcp.domain.settings import Settings
from flux_mcp.domain.videos import GenerateVideoArgs
from flux_mcp.emulator import Fault, RunningEmulator
from flux_mcp.media.videos import mp4_info, poster_available, poster_frame
from flux_mcp.server.build import build_server
from tests.support import make_settings, text
from tests.support import structured as data
from tests.support.prerequisites import require

pytestmark = pytest.mark.anyio


@pytest.fixture
def pyav() -> None:
    if not poster_available():
        require("video", "the video extra (PyAV) is not installed (pip install -e '.[video]')")


needs_pyav = pytest.mark.usefixtures("pyav")


def check_mp4(path: Path, seconds: float) -> None:
    """The container and its duration, read from the boxes, and (with PyAV) by decoding it."""
    raw = path.read_bytes()
    info = mp4_info(raw)
    assert info.seconds == pytest.approx(seconds, abs=0.2)
    if poster_available():
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert container.duration is not None and container.duration / 1e6 == pytest.approx(
                seconds, abs=0.2
            )
            assert sum(1 for _ in container.decode(stream)) == round(
                seconds * float(stream.average_rate or 0)
            )


async def test_text_to_video_saves_a_playable_mp4_with_sidecar_and_history(
    client: Client, emulator: RunningEmulator
) -> None:
    result = await client.call_tool(
        "generate_video", {"prompt": "a paper boat on a rainy street", "duration": 6}
    )
    assert not result.is_error, text(result)
    got = data(result)
    assert got["kind"] == "video" and got["status"] == "succeeded"
    [video] = got["videos"]
    assert video["seconds"] == 6 and video["width"] and video["height"] and video["fps"]
    assert video["resource_uri"] == f"flux://videos/{got['task_id']}/0"
    path = Path(video["path"])
    check_mp4(path, 6)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["task_id"] == got["task_id"] and sidecar["kind"] == "video" and sidecar["seconds"] == 6
    summary = text(result)
    assert video["url"] in summary and "6 s" in summary and f"{video['width']}x{video['height']}" in summary
    assert "Cost:" in summary
    [link] = [block for block in result.content if isinstance(block, ResourceLink)]
    assert link.mime_type == "video/mp4" and str(link.uri) == video["resource_uri"]
    body = emulator.state.tasks[got["task_id"]].request
    assert (
        body["mode"] == "t2v" and body["model"] == "flux-3" and "kind" not in body and body["async"] is True
    )
    listing = data(await client.call_tool("list_tasks", {}))
    [item] = listing["tasks"]
    assert item["kind"] == "video" and item["videos"][0]["path"] == str(path)


async def test_the_video_resource_serves_the_mp4(client: Client) -> None:
    got = data(await client.call_tool("generate_video", {"prompt": "waves"}))
    contents = (await client.read_resource(got["videos"][0]["resource_uri"])).contents
    [blob] = contents
    assert blob.mime_type == "video/mp4"
    raw = base64.b64decode(blob.blob)  # type: ignore[union-attr]
    assert raw == Path(got["videos"][0]["path"]).read_bytes()
    assert mp4_info(raw).seconds == pytest.approx(5, abs=0.2)
    templates = (await client.list_resource_templates()).resource_templates
    assert any(
        t.uri_template == "flux://videos/{task_id}/{index}" and t.mime_type == "video/mp4" for t in templates
    )


@needs_pyav
async def test_the_poster_frame_is_a_small_image_of_the_first_frame(client: Client) -> None:
    result = await client.call_tool("generate_video", {"prompt": "a lighthouse", "aspect_ratio": "9:16"})
    [poster] = [block for block in result.content if isinstance(block, ImageContent)]
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(poster.data))) as image:
        assert image.format == "JPEG" and image.height > image.width  # 9:16, as the video
    assert "no poster" not in text(result)


@needs_pyav
async def test_a_video_declaring_too_many_pixels_gets_no_poster_and_no_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flux_mcp.media.videos

    clip = Path(flux_mcp.media.videos.__file__).parent.parent / "emulator" / "clip.mp4"
    assert poster_frame(clip.read_bytes(), 64) is not None
    monkeypatch.setattr(flux_mcp.media.videos, "MAX_PIXELS", 16)  # as if the clip were a bomb
    with pytest.raises(VideoError, match="too large to decode"):
        poster_frame(clip.read_bytes(), 64)


async def test_without_pyav_the_result_says_no_poster_is_shown(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flux_mcp.media.videos
    import flux_mcp.server.render

    monkeypatch.setattr(flux_mcp.media.videos, "poster_frame", lambda *args, **kwargs: None)
    monkeypatch.setattr(flux_mcp.server.render, "poster_available", lambda: False)
    result = await client.call_tool("generate_video", {"prompt": "a lighthouse"})
    assert not any(isinstance(block, ImageContent) for block in result.content)
    assert "no poster frame is shown" in text(result) and data(result)["videos"][0]["path"]


async def test_image_to_video_from_a_flux_image_of_an_earlier_generate_image(
    client: Client, emulator: RunningEmulator
) -> None:
    picture = data(await client.call_tool("generate_image", {"prompt": "a red kite"}))
    source = picture["images"][0]
    result = await client.call_tool(
        "generate_video",
        {
            "prompt": "the kite flies away",
            "mode": "i2v",
            "keyframes": [source["resource_uri"], [4, source["resource_uri"]]],
            "duration": 8,
        },
    )
    assert not result.is_error, text(result)
    body = emulator.state.tasks[data(result)["task_id"]].request
    assert body["keyframes"] == [source["url"], [4, source["url"]]]  # the API gets fetchable URLs
    check_mp4(Path(data(result)["videos"][0]["path"]), 8)


async def test_video_to_video_from_an_earlier_video_and_draft_enhance(
    client: Client, emulator: RunningEmulator
) -> None:
    draft = data(
        await client.call_tool("generate_video", {"prompt": "a quick sketch of rain", "draft": True})
    )
    draft_id = draft["videos"][0]["draft_task_id"]
    assert draft_id and "draft_enhance" in text(
        await client.call_tool("get_task", {"task_id": draft["task_id"]})
    )
    enhanced = await client.call_tool(
        "generate_video", {"prompt": "rain, full quality", "mode": "draft_enhance", "draft_task_id": draft_id}
    )
    assert not enhanced.is_error, text(enhanced)
    assert emulator.state.tasks[data(enhanced)["task_id"]].request["draft_task_id"] == draft_id
    v2v = await client.call_tool(
        "generate_video",
        {
            "prompt": "now at night",
            "mode": "v2v",
            "start_video": draft["videos"][0]["resource_uri"],
            "duration": 15,
        },
    )
    assert not v2v.is_error, text(v2v)
    assert emulator.state.tasks[data(v2v)["task_id"]].request["start_video"] == draft["videos"][0]["url"]
    check_mp4(Path(data(v2v)["videos"][0]["path"]), 15)


REFUSED = [
    ({"mode": "i2v"}, "needs keyframes"),
    ({"mode": "i2v", "keyframes": []}, "keyframes"),
    ({"mode": "i2v", "keyframes": ["https://cdn.example.com/a.png"] * 11}, "keyframes"),
    ({"mode": "v2v", "keyframes": ["https://cdn.example.com/a.png"]}, "v2v"),
    ({"mode": "v2v"}, "needs start_video"),
    ({"keyframes": ["https://cdn.example.com/a.png"]}, "t2v takes no keyframes"),
    ({"mode": "draft_enhance"}, "needs draft_task_id"),
    ({"draft_task_id": "abc"}, "t2v takes no draft_task_id"),
    ({"duration": 4}, "5-20"),
    ({"duration": 21}, "5-20"),
    ({"mode": "v2v", "start_video": "https://cdn.example.com/v.mp4", "duration": 16}, "5-15 s"),
    ({"duration": "long"}, "duration"),
    ({"duration": True}, "duration"),
    ({"mode": "i2v", "keyframes": [[9, "https://cdn.example.com/a.png"]], "duration": 8}, "0-8 s"),
    ({"mode": "i2v", "keyframes": [[-1, "https://cdn.example.com/a.png"]]}, "outside the video"),
    ({"mode": "i2v", "keyframes": ["ftp://example.com/a.png"]}, "keyframes"),
    ({"mode": "v2v", "start_video": "/home/me/clip.mp4"}, "start_video"),
    ({"resolution": "8k"}, "resolution"),
    ({"aspect_ratio": "3:2"}, "aspect_ratio"),
    ({"mode": "draft_enhance", "draft_task_id": "abc", "draft": True}, "leave draft false"),
    ({"mode": "upscale"}, "mode"),
    ({"action": "edit"}, "unknown argument"),
]


@pytest.mark.parametrize(("arguments", "reason"), REFUSED)
async def test_refused_before_any_upstream_call(
    client: Client, emulator: RunningEmulator, arguments: dict[str, Any], reason: str
) -> None:
    result = await client.call_tool("generate_video", {"prompt": "a boat", **arguments})
    assert result.is_error and reason in text(result), text(result)
    assert emulator.state.submissions == 0 and emulator.state.video_submissions == 0


async def test_an_unknown_flux_video_is_refused_before_submitting(
    client: Client, emulator: RunningEmulator
) -> None:
    result = await client.call_tool(
        "generate_video", {"prompt": "x", "mode": "v2v", "start_video": "flux://videos/nosuchtask/0"}
    )
    assert result.is_error and "No video 0" in text(result)
    assert emulator.state.video_submissions == 0


@hypothesis_settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    mode=st.sampled_from(["t2v", "i2v", "v2v", "draft_enhance"]),
    duration=st.one_of(st.none(), st.just("auto"), st.integers(-5, 30)),
    frames=st.one_of(
        st.none(), st.lists(st.tuples(st.floats(-2, 25, allow_nan=False), st.booleans()), max_size=12)
    ),
    start=st.booleans(),
    draft_id=st.booleans(),
)
def test_what_the_model_accepts_the_emulator_accepts(
    mode: str, duration: Any, frames: list[tuple[float, bool]] | None, start: bool, draft_id: bool
) -> None:
    """The tool's rules and the emulator's (written apart, from the upstream's docs) agree."""
    from flux_mcp.emulator.validation import BadRequest
    from flux_mcp.emulator.videos import validate_video_request

    url = "https://cdn.example.com/a.png"
    arguments: dict[str, Any] = {"prompt": "p", "mode": mode, "duration": duration}
    if frames is not None:
        arguments["keyframes"] = [[at, url] if timed else url for at, timed in frames]
    if start:
        arguments["start_video"] = "https://cdn.example.com/v.mp4"
    if draft_id:
        arguments["draft_task_id"] = "abc"
    try:
        body: dict[str, Any] | None = GenerateVideoArgs.model_validate(arguments).to_request().body()
    except ValidationError:
        body = None
    try:
        validate_video_request({key: value for key, value in arguments.items() if value is not None})
        emulator_accepts = True
    except BadRequest:
        emulator_accepts = False
    if body is not None:
        validate_video_request(body)  # what we send is accepted
    # Duplicate keyframe times are our own stricter rule; otherwise both sides agree.
    times = [at for at, timed in frames or [] if timed]
    if len(set(times)) == len(times):
        assert (body is not None) == emulator_accepts, arguments


async def test_pending_then_get_task_finishes_the_video(emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 1.0
    async with Client(build_server(make_settings(emulator))) as client:
        pending = await client.call_tool("generate_video", {"prompt": "slow boat", "wait_seconds": 0})
        got = data(pending)
        assert got["status"] == "pending" and got["kind"] == "video" and not pending.is_error
        assert "video is still being generated" in got["next_step"]
        emulator.state.config.latency = 0.0
        done = await client.call_tool("get_task", {"task_id": got["task_id"], "wait_seconds": 30})
        finished = data(done)
        assert finished["status"] == "succeeded" and finished["kind"] == "video"
        check_mp4(Path(finished["videos"][0]["path"]), 5)
        batch = data(await client.call_tool("get_tasks", {"task_ids": [got["task_id"]]}))
        assert batch["tasks"][0]["kind"] == "video" and batch["tasks"][0]["videos"][0]["seconds"] == 5
        again = data(await client.call_tool("get_task", {"task_id": got["task_id"]}))
        assert again["videos"][0]["path"] == finished["videos"][0]["path"]  # saved once, not twice
    assert emulator.state.video_submissions == 1


async def test_a_retry_after_a_lost_answer_continues_the_same_video(emulator: RunningEmulator) -> None:
    emulator.state.config.latency = 1.0
    async with Client(build_server(make_settings(emulator, wait_seconds=0.0))) as client:
        first = data(await client.call_tool("generate_video", {"prompt": "once only"}))
        second = await client.call_tool("generate_video", {"prompt": "once only"})
    assert data(second)["task_id"] == first["task_id"] and data(second)["attached"]
    assert emulator.state.video_submissions == 1


async def test_faults_and_callbacks_work_for_videos(emulator: RunningEmulator, settings: Settings) -> None:
    emulator.state.faults.append(Fault("429", "videos"))
    emulator.state.faults.append(Fault("fail_task", "videos"))
    async with Client(build_server(settings)) as client:
        failed = await client.call_tool("generate_video", {"prompt": "doomed"})
    assert failed.is_error and data(failed)["status"] == "failed" and data(failed)["kind"] == "video"
    assert emulator.state.video_submissions == 2  # the 429 was retried: it provably was not taken


async def test_edit_and_upscale_answer_service_unavailable_in_the_emulator(emulator: RunningEmulator) -> None:
    import httpx2

    from testkit import TOKEN

    async with httpx2.AsyncClient() as http:
        for action in ("edit", "upscale"):
            answer = await http.post(
                f"{emulator.base_url}/flux/videos",
                json={"action": action, "prompt": "x"},
                headers={"authorization": f"Bearer {TOKEN}"},
            )
            assert answer.status_code == 503 and answer.json()["error"]["code"] == "service_unavailable"
    assert emulator.state.platform.used == 0


def test_mp4_info_refuses_what_is_not_an_mp4() -> None:
    for junk in (b"", b"<html>nope</html>", b"\x00\x00\x00\x10ftypisom\x00\x00\x00\x00"):
        with pytest.raises(VideoError):
            mp4_info(junk)


async def test_a_video_larger_than_the_cap_is_not_saved(emulator: RunningEmulator) -> None:
    async with Client(build_server(make_settings(emulator, max_video_download_mb=0.001))) as client:
        result = await client.call_tool("generate_video", {"prompt": "too big"})
    [video] = data(result)["videos"]
    assert video["path"] is None and "larger than the 0.001 MB limit" in video["warning"]


async def test_models_guide_says_video_edit_and_upscale_are_unavailable(client: Client) -> None:
    guide = json.loads((await client.read_resource("flux://models")).contents[0].text)  # type: ignore[union-attr]
    assert guide["flux-3"]["unavailable_upstream"] == ["edit", "upscale"]
    assert "service_unavailable" in guide["flux-3"]["guide"]
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    schema = tools["generate_video"].input_schema
    assert set(schema["properties"]) == set(GenerateVideoArgs.model_fields)
    assert schema["properties"]["mode"]["enum"] == ["t2v", "i2v", "v2v", "draft_enhance"]


def test_demo_video_makes_a_playable_mp4_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flux_mcp.cli.main import main

    code = main(
        ["demo", "--video", "a paper boat on a rainy street", "--out", str(tmp_path), "--latency", "0.2"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    [saved] = tmp_path.glob("*.mp4")
    assert f"saved: {saved}" in out and "flux-3" in out
    check_mp4(saved, 5)
    assert json.loads(saved.with_suffix(".json").read_text())["kind"] == "video"
