"""Hostile MP4s from a hostile upstream: the poster is bounded before ffmpeg decodes anything.

The emulator (a real upstream on loopback) serves MP4s built here with PyAV: many tiny H.264 tracks,
several large ones, one 8192x8192 track, and one whose boxes say 64x64 while its H.264 header says
8192x8192. The video is saved either way; the poster is refused or made from one track, and the
memory the poster step takes (peak RSS, in a fresh interpreter) stays bounded.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import ImageContent

import flux_mcp.emulator.app
from flux_mcp.domain.errors import VideoError
from flux_mcp.media.mp4 import boxes_in, tracks
from flux_mcp.media.videos import MAX_POSTER_TRACKS, poster_available, poster_frame
from tests.support import structured as data
from tests.support import text
from tests.support.prerequisites import require

pytestmark = pytest.mark.anyio

# Peak RSS growth allowed for one poster step, refused or made. Before the bound (measured): 159 MB
# for 200 tiny tracks, 254 MB for 3 tracks of 4096x4096, 158 MB for 8192x8192, declared or lied about.
POSTER_PEAK_MB = 96


@pytest.fixture(autouse=True)
def pyav() -> None:
    if not poster_available():
        require("video", "the video extra (PyAV) is not installed (pip install -e '.[video]')")


def h264_mp4(tracks_: int, width: int, height: int) -> bytes:
    """An MP4 of `tracks_` H.264 tracks of one black frame each."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        streams = []
        for _ in range(tracks_):
            stream = container.add_stream("libx264", rate=1, options={"preset": "ultrafast"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.time_base = Fraction(1, 1)
            streams.append(stream)
        for stream in streams:
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.pts = 0
            container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    return buffer.getvalue()


def lying_about_its_size(mp4: bytes, width: int, height: int) -> bytes:
    """The file with its tracks and sample entries declaring `width`x`height`; its H.264 header unchanged."""
    lie = bytearray(mp4)

    def rewrite(start: int, end: int) -> None:
        for box in boxes_in(mp4, start, end):
            if box.kind == "tkhd":
                lie[box.end - 8 : box.end] = struct.pack(">II", width << 16, height << 16)
            elif box.kind == "stsd":
                for entry in boxes_in(mp4, box.payload + 8, box.end):
                    lie[entry.payload + 24 : entry.payload + 28] = struct.pack(">HH", width, height)
            elif box.kind in ("trak", "mdia", "minf", "stbl"):
                rewrite(box.payload, box.end)

    for track in tracks(mp4):
        rewrite(track.box.start, track.box.end)
    return bytes(lie)


HOSTILE = {
    "200 tiny tracks": lambda: h264_mp4(200, 16, 16),
    "3 tracks of 4096x4096": lambda: h264_mp4(3, 4096, 4096),
    "8192x8192": lambda: h264_mp4(1, 8192, 8192),
    "8192x8192 declared as 64x64": lambda: lying_about_its_size(h264_mp4(1, 8192, 8192), 64, 64),
}
REFUSED = {
    "200 tiny tracks": f"declares 200 tracks (at most {MAX_POSTER_TRACKS} are read)",
    "8192x8192": "declares 8192x8192, too large to decode",
    "8192x8192 declared as 64x64": "declares 8192x8192, too large to decode",
}


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile-mp4")
    files = {}
    for index, (name, build) in enumerate(HOSTILE.items()):
        files[name] = folder / f"{index}.mp4"
        files[name].write_bytes(build())
    return files


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_a_hostile_upstreams_video_is_saved_and_its_poster_bounded(
    name: str, hostile_files: dict[str, Path], client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = hostile_files[name].read_bytes()
    monkeypatch.setattr(flux_mcp.emulator.app, "render_mp4", lambda *args: hostile)
    result = await client.call_tool("generate_video", {"prompt": "a paper boat"})
    assert not result.is_error, text(result)
    [video] = data(result)["videos"]
    assert Path(video["path"]).read_bytes() == hostile  # the video itself is kept
    posters = [block for block in result.content if isinstance(block, ImageContent)]
    if name in REFUSED:
        assert not posters
        assert REFUSED[name] in video["warning"] and "no poster frame is shown" in video["warning"]
    else:
        [poster] = posters  # made from the first track alone
        assert base64.b64decode(poster.data)[:2] == b"\xff\xd8" and not video.get("warning")


def test_other_tracks_are_hidden_from_the_decoder(hostile_files: dict[str, Path]) -> None:
    """ffmpeg is handed one track: only its first frame is decoded, the others are `free` boxes."""
    import av

    from flux_mcp.media.mp4 import only_track
    from flux_mcp.media.videos import poster_track

    mp4 = hostile_files["3 tracks of 4096x4096"].read_bytes()
    only = only_track(mp4, poster_track(mp4)).read()
    assert only is not None and len(only) == len(mp4) and len(tracks(only)) == 1
    for chunk in (1, 3, 4096):  # the view reads the same across any read boundary
        assert read_in_chunks(only_track(mp4, poster_track(mp4)), chunk) == only
    with av.open(io.BytesIO(only)) as container:
        assert len(container.streams) == 1
    assert poster_frame(mp4, 64) is not None


def test_a_flood_of_tiny_boxes_is_refused_before_it_is_read() -> None:
    """Millions of 8-byte boxes would cost millions of objects in the box reader (and the event loop
    seconds, as the download check runs there): past MAX_BOXES side by side, the file is refused."""
    from flux_mcp.media.mp4 import MAX_BOXES, mp4_info

    clip = h264_mp4(1, 16, 16)
    flood = clip + struct.pack(">I4s", 8, b"free") * (MAX_BOXES + 1)
    with pytest.raises(VideoError, match=f"over {MAX_BOXES} boxes side by side"):
        mp4_info(flood)
    with pytest.raises(VideoError, match=f"over {MAX_BOXES} boxes side by side"):
        poster_frame(flood, 64)
    assert mp4_info(clip).seconds > 0 and poster_frame(clip, 64) is not None


def read_in_chunks(view: io.RawIOBase, size: int) -> bytes:
    chunks = []
    while chunk := view.read(size):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_track_past_the_frame_bound_is_refused_from_its_boxes() -> None:
    mp4 = bytearray(h264_mp4(1, 16, 16))
    [track] = tracks(bytes(mp4))
    sizes = next(box for box in _descendants(bytes(mp4), track.box) if box.kind == "stsz")
    mp4[sizes.payload + 4 : sizes.payload + 12] = struct.pack(">II", 1, 200_000_000)  # 200M one-byte frames
    with pytest.raises(VideoError, match="declares 200000000 frames"):
        poster_frame(bytes(mp4), 64)


def _descendants(data_: bytes, box: Any) -> list[Any]:
    found = []
    for child in boxes_in(data_, box.payload, box.end):
        found.append(child)
        if child.kind in ("mdia", "minf", "stbl"):
            found.extend(_descendants(data_, child))
    return found


PEAK = """
import sys
from pathlib import Path
from flux_mcp.media.videos import poster_frame
import av, PIL.Image  # loaded before the baseline: the poster step is what is measured

def peak_kb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))

data = Path(sys.argv[1]).read_bytes()
before = peak_kb()
try:
    poster_frame(data, 512)
except Exception:
    pass
print((peak_kb() - before) // 1024)
"""


@pytest.mark.subprocess
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
@pytest.mark.parametrize("name", list(HOSTILE))
def test_the_poster_step_stays_within_its_memory_bound(name: str, hostile_files: dict[str, Path]) -> None:
    source = str(Path(flux_mcp.emulator.app.__file__).parents[2])
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(hostile_files[name])],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": source},
    )
    grown_mb = int(done.stdout.strip())
    assert grown_mb < POSTER_PEAK_MB, f"{name}: the poster step took {grown_mb} MB"
