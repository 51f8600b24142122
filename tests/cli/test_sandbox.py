"""The offline sandbox across processes, as frameworks that start a `flux-mcp --sandbox` per call use it.

A task submitted through one sandbox process is finished by the next; its saved file stays; the image
URLs of an earlier process still resolve; the sandbox's history and images never mix with the real
ones. Underneath: emulators that share a task journal answer for each other's tasks.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client

from flux_mcp.cli.sandbox import FOLDER_NAME, PORT_RANGE, preferred_port, sandbox_places, serve_sandbox
from flux_mcp.domain.settings import Settings, default_data_dir
from flux_mcp.emulator import EmulatorConfig, Fault, serve_emulator
from flux_mcp.server.build import build_server
from tests.support import Recorder, child_env, stderr_file, stdio_session, structured, text

pytestmark = pytest.mark.anyio

GENERATE = {
    "action": "generate",
    "prompt": "a journaled cat",
    "model": "flux-dev",
    "size": "1:1",
    "async": True,
}


def sandbox_env(tmp_path: Path) -> dict[str, str]:
    return child_env(tmp_path, FLUX_MCP_POLL_MIN_SECONDS="0.1", FLUX_MCP_POLL_MAX_SECONDS="0.3")


# --- across processes ----------------------------------------------------------------------------


@pytest.mark.subprocess
async def test_a_pending_sandbox_task_is_finished_by_the_next_sandbox_process(tmp_path: Path) -> None:
    env = sandbox_env(tmp_path)
    with stderr_file(tmp_path) as errlog:
        async with stdio_session(["--sandbox"], env, errlog, Recorder()) as first:
            pending = structured(
                await first.call_tool("generate_image", {"prompt": "later", "wait_seconds": 0})
            )
            done = structured(await first.call_tool("generate_image", {"prompt": "a cat to keep"}))
        assert pending["status"] == "pending" and done["status"] == "succeeded"
        earlier_url = done["images"][0]["url"]

        async with stdio_session(["--sandbox"], env, errlog, Recorder()) as second:
            finished = await second.call_tool("get_task", {"task_id": pending["task_id"]})
            # The first process's image URL still resolves: the sandbox's port is the same.
            async with httpx2.AsyncClient() as http:
                picture = await http.get(earlier_url)
        errlog.seek(0)
        log = errlog.read()

    data = structured(finished)
    assert data["status"] == "succeeded" and data["prompt"] == "later", text(finished)
    saved = Path(data["images"][0]["path"])
    assert saved.is_file() and saved.parent == tmp_path / "images" / FOLDER_NAME  # outlived both processes
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert (tmp_path / FOLDER_NAME / "history.db").is_file()
    assert not (tmp_path / "history.db").exists()  # never the real history
    assert "Traceback" not in log


async def test_the_sandbox_keeps_its_files_beside_the_real_ones(tmp_path: Path, monkeypatch: Any) -> None:
    places = sandbox_places(Settings(db=tmp_path / "data" / "mine.db", output_dir=tmp_path / "pictures"))
    assert places.history == tmp_path / "data" / FOLDER_NAME / "mine.db"
    assert places.images == tmp_path / "pictures" / FOLDER_NAME
    assert places.journal.parent == places.history.parent
    for name in ("FLUX_MCP_DB", "FLUX_MCP_OUTPUT_DIR", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    (tmp_path / "Pictures").mkdir()
    default = sandbox_places(Settings())
    assert default.images == tmp_path / "Pictures" / "flux-mcp" / FOLDER_NAME
    assert default.history == default_data_dir() / FOLDER_NAME / "history.db"
    assert str(default_data_dir()).startswith(str(tmp_path))


def test_the_preferred_port_depends_only_on_the_sandbox_folder(tmp_path: Path) -> None:
    assert preferred_port(tmp_path / "a") == preferred_port(tmp_path / "a")
    ports = {preferred_port(tmp_path / str(index)) for index in range(50)}
    assert all(port in PORT_RANGE for port in ports) and len(ports) > 40


async def test_a_second_sandbox_uses_a_free_port_and_still_serves_every_task(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "history.db", output_dir=tmp_path / "images")
    preferred = sandbox_places(settings).port
    with socket.socket() as taken:  # another program (or a sandbox still running) holds the port
        with contextlib.suppress(OSError):  # already held by someone else: the same situation
            taken.bind(("127.0.0.1", preferred))
            taken.listen()
        async with serve_sandbox(settings, latency=0) as elsewhere:
            assert not elsewhere.api_base_url.endswith(f":{preferred}")
            result = await _generate(elsewhere)
    assert structured(result)["status"] == "succeeded", text(result)
    assert structured(result)["images"][0]["path"].startswith(str(tmp_path / "images" / FOLDER_NAME))


async def test_a_sandbox_whose_folder_cannot_be_written_still_serves(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = Settings(db=blocker / "history.db", output_dir=tmp_path / "images")
    async with serve_sandbox(settings, latency=0) as effective:
        result = await _generate(effective)
    assert structured(result)["status"] == "succeeded", text(result)


async def _generate(settings: Settings) -> Any:
    quick = settings.model_copy(update={"poll_min_seconds": 0.05, "poll_max_seconds": 0.2})
    async with Client(build_server(quick)) as client:
        return await client.call_tool("generate_image", {"prompt": "a cat on another port"})


# --- the shared journal underneath -----------------------------------------------------------------


async def test_emulators_sharing_a_journal_answer_for_each_others_tasks(tmp_path: Path) -> None:
    journal = tmp_path / "tasks.db"
    headers = {"authorization": "Bearer t"}
    async with httpx2.AsyncClient(headers=headers) as http:
        async with serve_emulator(EmulatorConfig(latency=0), journal=journal) as first:
            first.state.faults.append(Fault("fail_task"))
            failed = (await http.post(f"{first.base_url}/flux/images", json=GENERATE)).json()["task_id"]
            task_id = (await http.post(f"{first.base_url}/flux/images", json=GENERATE)).json()["task_id"]
            original = await _retrieve(http, first.base_url, task_id)
            png = (await http.get(original["response"]["data"][0]["image_url"])).content
        async with serve_emulator(EmulatorConfig(latency=0), journal=journal) as second:
            again = await _retrieve(http, second.base_url, task_id)
            batch = await http.post(
                f"{second.base_url}/flux/tasks",
                json={"action": "retrieve_batch", "ids": [task_id, failed, "nope"]},
            )
            url = again["response"]["data"][0]["image_url"]
            served = await http.get(url)
            assert second.state.accepted == 0  # it only answered; the first emulator accepted them
    assert url.startswith(second.base_url)  # served by the emulator that was asked
    assert {key: again[key] for key in ("id", "request", "created_at", "finished_at", "trace_id", "_id")} == {
        key: original[key] for key in ("id", "request", "created_at", "finished_at", "trace_id", "_id")
    }
    assert again["response"]["data"][0]["seed"] == original["response"]["data"][0]["seed"]
    assert served.status_code == 200 and served.content == png
    states = {item["id"]: item.get("state") for item in batch.json()["items"]}
    assert states == {task_id: None, failed: "failed"}


async def test_an_emulator_without_a_journal_knows_only_its_own_tasks(tmp_path: Path) -> None:
    headers = {"authorization": "Bearer t"}
    async with httpx2.AsyncClient(headers=headers) as http:
        async with serve_emulator(EmulatorConfig(latency=0), journal=tmp_path / "tasks.db") as first:
            task_id = (await http.post(f"{first.base_url}/flux/images", json=GENERATE)).json()["task_id"]
        async with serve_emulator(EmulatorConfig(latency=0)) as witness:
            missing = await http.post(
                f"{witness.base_url}/flux/tasks", json={"action": "retrieve", "id": task_id}
            )
    assert missing.status_code == 404


async def _retrieve(http: httpx2.AsyncClient, base_url: str, task_id: str) -> dict[str, Any]:
    response = await http.post(f"{base_url}/flux/tasks", json={"action": "retrieve", "id": task_id})
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record
