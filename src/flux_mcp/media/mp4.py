"""MP4 boxes read without a library: the container's info, its declared tracks, and a one-track copy.

A poster is decoded by ffmpeg, which probes (and decodes a little of) every stream it finds while
opening a file. So what it may see is decided here first, from the boxes alone: the tracks and the
size each declares, and a view of the file in which every box but the chosen track (and the few a
demuxer needs to find it) reads as `free`, at the same offsets, so the sample offsets stay valid.
"""

from __future__ import annotations

import bisect
import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flux_mcp.domain.errors import VideoError

# What a single-track copy keeps: at the top level, and inside `moov` (besides the chosen `trak`).
# Everything else (other tracks, `meta` items, fragments, `iods`…) becomes `free`: ffmpeg skips it.
KEPT_TOP_LEVEL = frozenset({"ftyp", "moov", "mdat", "free", "skip", "wide"})
KEPT_IN_MOOV = frozenset({"mvhd"})
# Inside the kept track, metadata goes too: a `meta` box can declare items (HEIF) ffmpeg makes streams of.
DROPPED_IN_TRACK = frozenset({"meta", "udta"})
TRACK_CONTAINERS = frozenset({"mdia", "minf", "stbl", "edts", "dinf"})
FREE = b"free"
MAX_BOXES = 100_000  # side by side at one level: a fragmented MP4 has two per fragment


@dataclass(frozen=True)
class Box:
    kind: str
    start: int  # the box header's first byte
    payload: int  # the payload's first byte
    end: int


@dataclass(frozen=True)
class Mp4Info:
    """What the container says: its brand and its duration (from `mvhd`)."""

    brand: str
    seconds: float


@dataclass(frozen=True)
class Track:
    """One `trak` as declared: its handler (`vide`, `soun`…), first sample entry, largest size, samples."""

    box: Box
    handler: str
    sample_entry: str
    width: int
    height: int
    samples: int


def mp4_info(data: bytes, source: str = "the video") -> Mp4Info:
    """Read the MP4's top-level boxes: `ftyp` first, then `moov`/`mvhd` for the duration."""
    boxes = {box.kind: box for box in boxes_in(data, 0, len(data))}
    if not data[4:8] == b"ftyp" or "ftyp" not in boxes:
        raise VideoError(f"{source} is not an MP4 file (no ftyp box)")
    brand = data[boxes["ftyp"].payload : boxes["ftyp"].payload + 4].decode("ascii", "replace")
    if "moov" not in boxes:
        raise VideoError(f"{source} is an incomplete MP4 (no moov box)")
    inner = {box.kind: box for box in boxes_in(data, boxes["moov"].payload, boxes["moov"].end)}
    if "mvhd" not in inner:
        raise VideoError(f"{source} is an MP4 without a movie header (mvhd)")
    start, end = inner["mvhd"].payload, inner["mvhd"].end
    version = data[start]
    if version == 1 and end - start >= 32:
        timescale, duration = struct.unpack(">IQ", data[start + 20 : start + 32])
    elif end - start >= 20:
        timescale, duration = struct.unpack(">II", data[start + 12 : start + 20])
    else:
        raise VideoError(f"{source} has a damaged movie header")
    if timescale == 0:
        raise VideoError(f"{source} has a movie header without a time scale")
    return Mp4Info(brand=brand, seconds=duration / timescale)


def boxes_in(data: bytes, start: int, end: int) -> Iterator[Box]:
    """Each box between `start` and `end`, in order; stops at the first that does not fit.

    More than MAX_BOXES side by side is refused: a file of 8-byte boxes would otherwise cost millions
    of objects (and seconds of the event loop) before anything is decided.
    """
    offset, count = start, 0
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        header = 8
        if size == 1 and offset + 16 <= end:
            size, header = struct.unpack(">Q", data[offset + 8 : offset + 16])[0], 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            return
        count += 1
        if count > MAX_BOXES:
            raise VideoError(f"the video has over {MAX_BOXES} boxes side by side; it is not read")
        yield Box(kind.decode("latin-1"), offset, offset + header, offset + size)
        offset += size


def movie_box(data: bytes) -> Box:
    """The one `moov`; a file with none or several (demuxers disagree on which counts) is refused."""
    movies = [box for box in boxes_in(data, 0, len(data)) if box.kind == "moov"]
    if len(movies) != 1:
        raise VideoError(f"the video has {len(movies)} movie boxes (moov); one was expected")
    return movies[0]


def tracks(data: bytes) -> list[Track]:
    """The tracks the movie declares, read from their boxes; nothing is decoded."""
    movie = movie_box(data)
    return [_track(data, box) for box in boxes_in(data, movie.payload, movie.end) if box.kind == "trak"]


def only_track(data: bytes, keep: Track) -> OneTrack:
    """The file as ffmpeg should see it: every box but `keep` (and what finding it needs) read as `free`."""
    movie = movie_box(data)
    renamed = [box.start + 4 for box in boxes_in(data, 0, len(data)) if box.kind not in KEPT_TOP_LEVEL]
    renamed += [
        box.start + 4
        for box in boxes_in(data, movie.payload, movie.end)
        if box.kind not in KEPT_IN_MOOV and box != keep.box
    ]
    renamed += [box.start + 4 for box in _within(data, keep.box) if box.kind in DROPPED_IN_TRACK]
    return OneTrack(data, renamed)


def _within(data: bytes, parent: Box) -> Iterator[Box]:
    """The boxes inside `parent`, down through the track's containers."""
    for box in boxes_in(data, parent.payload, parent.end):
        yield box
        if box.kind in TRACK_CONTAINERS:
            yield from _within(data, box)


class OneTrack(io.RawIOBase):
    """`data` read as a file with some box types read as `free`: a one-track file without a copy of it
    (a video may be hundreds of megabytes)."""

    def __init__(self, data: bytes, renamed: list[int]) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._renamed = sorted(renamed)  # where each renamed box's 4-byte type starts
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: len(self._data)}[whence]
        self._at = max(0, base + offset)
        return self._at

    def readinto(self, buffer: Any) -> int:
        start = min(self._at, len(self._data))
        end = min(start + len(buffer), len(self._data))
        target = memoryview(buffer).cast("B")
        target[: end - start] = self._data[start:end]
        for type_at in self._renamed[bisect.bisect_left(self._renamed, start - 3) :]:
            if type_at >= end:
                break
            for index, byte in enumerate(FREE):
                if start <= type_at + index < end:
                    target[type_at + index - start] = byte
        self._at = end
        return end - start


def _track(data: bytes, trak: Box) -> Track:
    header = _child(data, trak, "tkhd")
    media = _child(data, trak, "mdia")
    handler = _child(data, media, "hdlr")
    table = _child(data, _child(data, media, "minf"), "stbl")
    entries = _sample_entries(data, _child(data, table, "stsd"))
    sizes = [_tkhd_size(data, header)] + [_visual_size(data, entry) for entry in entries]
    width, height = max(sizes, key=lambda size: size[0] * size[1])
    return Track(
        box=trak,
        handler=_text(data, handler, 8) if handler else "",
        sample_entry=entries[0].kind if entries else "",
        width=width,
        height=height,
        samples=_sample_count(data, table),
    )


def _child(data: bytes, parent: Box | None, kind: str) -> Box | None:
    if parent is None:
        return None
    return next((box for box in boxes_in(data, parent.payload, parent.end) if box.kind == kind), None)


def _text(data: bytes, box: Box, at: int) -> str:
    if box.end - box.payload < at + 4:
        return ""
    return data[box.payload + at : box.payload + at + 4].decode("latin-1")


def _sample_entries(data: bytes, stsd: Box | None) -> list[Box]:
    """The sample descriptions (past the version, flags and entry count)."""
    return list(boxes_in(data, stsd.payload + 8, stsd.end)) if stsd else []


def _tkhd_size(data: bytes, tkhd: Box | None) -> tuple[int, int]:
    """The presentation size: the last two 16.16 fixed-point numbers of the track header."""
    if tkhd is None or tkhd.end - tkhd.payload < 8:
        return 0, 0
    width, height = struct.unpack(">II", data[tkhd.end - 8 : tkhd.end])
    return width >> 16, height >> 16


def _visual_size(data: bytes, entry: Box) -> tuple[int, int]:
    """A visual sample entry's width and height (24 bytes into it); 0x0 for any other entry."""
    if entry.end - entry.payload < 28:
        return 0, 0
    width, height = struct.unpack(">HH", data[entry.payload + 24 : entry.payload + 28])
    return int(width), int(height)


def _sample_count(data: bytes, table: Box | None) -> int:
    """The samples the track declares (`stsz` or `stz2`): a demuxer indexes each of them."""
    sizes = _child(data, table, "stsz") or _child(data, table, "stz2")
    if sizes is None or sizes.end - sizes.payload < 12:
        return 0
    return int(struct.unpack(">I", data[sizes.payload + 8 : sizes.payload + 12])[0])
