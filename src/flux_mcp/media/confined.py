"""Opening a local file so that it provably lies inside an allowed folder, whatever is renamed meanwhile.

A path checked first and opened by name afterwards can be redirected in between: swap a folder on the
way for a link to somewhere else and the open follows the link. So the path is walked here one name at
a time, each name opened relative to the folder opened just before it with O_NOFOLLOW: a link is never
followed by the kernel, only by this walk (reading the link, then walking its target from the folder
holding it, or from `/`), and a name swapped for a link between its check and its open fails the open.
The folders the walk passed through are the file's real folders; the file lies inside an allowed folder
when one of them is that folder (same device and inode), and this is decided before the file is opened.
The bytes are read from the descriptor that was checked. Links that stay inside keep working; a link
that leads outside, wherever it points, is refused without saying where it points.

Where the platform cannot open relative to a folder (Windows), `dir_fd_supported` is False and the
caller checks by path instead.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from flux_mcp.domain.errors import ImageInputError

MAX_LINKS = 40  # links followed in one path, as Linux allows (beyond: a loop)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO swapped in must not wait for a writer
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)
_O_PATH = getattr(os, "O_PATH", os.O_RDONLY)  # Linux: a folder on the way needs search permission only
_FOLDER_FLAGS = _O_PATH | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC | _O_NOCTTY
_CHANGED = (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EMLINK)  # EMLINK: O_NOFOLLOW on a link (BSD)

Identity = tuple[int, int]  # (st_dev, st_ino)


def dir_fd_supported() -> bool:
    """Whether this platform opens files relative to an open folder without following links."""
    relative = all(call in os.supports_dir_fd for call in (os.open, os.stat, os.readlink))
    return relative and bool(_O_NOFOLLOW and _O_DIRECTORY)


def folder_identities(folders: Iterable[Path]) -> set[Identity]:
    """The allowed folders as they are now (links to them followed); missing ones allow nothing."""
    identities = set()
    for folder in folders:
        try:
            info = os.stat(folder.expanduser())
        except (OSError, ValueError):
            continue
        if stat.S_ISDIR(info.st_mode):
            identities.add((info.st_dev, info.st_ino))
    return identities


@dataclass
class Opened:
    """A regular file opened inside an allowed folder: its descriptor and what fstat said of it."""

    fd: int
    info: os.stat_result
    name: str


class Outside(Exception):
    """The path leads outside every allowed folder; `through_link` when a link took it there."""

    def __init__(self, *, through_link: bool) -> None:
        super().__init__("outside the allowed folders")
        self.through_link = through_link


@dataclass
class _Walk:
    """One resolution of one absolute path: the open folders from `/` down to where the walk stands."""

    given: str
    allowed: set[Identity]
    folders: list[int] = field(default_factory=list)
    identities: list[Identity] = field(default_factory=list)
    links: int = 0

    def run(self, path: Path) -> Opened:
        names = deque(part for part in str(path).split("/") if part)
        self._restart()
        while names:
            name = names.popleft()
            try:
                opened = self._step(name, names)
            except (ImageInputError, OSError):
                if not self._inside():  # what lies outside is not described, not even whether it exists
                    raise Outside(through_link=self.links > 0) from None
                raise
            if opened is not None:
                return opened
        if not self._inside():  # the path ended in `..` or `.`
            raise Outside(through_link=self.links > 0)
        raise ImageInputError(f"{self.given} is a folder, not an image file")

    def _step(self, name: str, names: deque[str]) -> Opened | None:
        if name == "..":
            self._up()
        elif name != ".":
            info = self._look(name)
            if stat.S_ISLNK(info.st_mode):
                names.extendleft(reversed(self._link(name)))
            elif names:
                self._enter(name, info)
            else:
                return self._open(name, info)
        return None

    def _inside(self, *more: Identity) -> bool:
        return not self.allowed.isdisjoint([*self.identities, *more])

    def close(self) -> None:
        for fd in self.folders:
            os.close(fd)
        self.folders.clear()
        self.identities.clear()

    def _restart(self) -> None:
        self.close()
        self._push(os.open("/", _FOLDER_FLAGS))

    def _push(self, fd: int) -> None:
        self.folders.append(fd)
        info = os.fstat(fd)
        self.identities.append((info.st_dev, info.st_ino))

    def _up(self) -> None:
        if len(self.folders) > 1:  # `/..` is `/`
            os.close(self.folders.pop())
            self.identities.pop()

    def _look(self, name: str) -> os.stat_result:
        try:
            return os.stat(name, dir_fd=self.folders[-1], follow_symlinks=False)
        except FileNotFoundError:
            raise ImageInputError(f"there is no file at {self.given}") from None

    def _link(self, name: str) -> list[str]:
        """The names a link stands for; the walk goes on from `/` when its target is absolute."""
        self.links += 1
        if self.links > MAX_LINKS:
            raise ImageInputError(f"{self.given} goes through too many links (a loop?), so it is not read")
        try:
            target = os.readlink(name, dir_fd=self.folders[-1])
        except OSError as exc:  # no longer a link: renamed since it was looked at
            raise _changed(self.given) if exc.errno in (errno.EINVAL, errno.ENOENT) else exc from None
        if target.startswith("/"):
            self._restart()
        return [part for part in target.split("/") if part]

    def _enter(self, name: str, info: os.stat_result) -> None:
        if not stat.S_ISDIR(info.st_mode):
            raise ImageInputError(f"{self.given}: a part of the path is not a folder")
        try:
            self._push(os.open(name, _FOLDER_FLAGS, dir_fd=self.folders[-1]))
        except OSError as exc:
            raise _changed(self.given) if exc.errno in _CHANGED else exc from None

    def _open(self, name: str, info: os.stat_result) -> Opened:
        itself = [(info.st_dev, info.st_ino)] if stat.S_ISDIR(info.st_mode) else []  # an allowed folder
        if not self._inside(*itself):
            raise Outside(through_link=self.links > 0)
        if not stat.S_ISREG(info.st_mode):
            return Opened(-1, info, name)  # the caller refuses it, saying what it is; it is never opened
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=self.folders[-1])
        except OSError as exc:
            raise _changed(self.given) if exc.errno in _CHANGED else exc from None
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino) or not stat.S_ISREG(opened.st_mode):
            os.close(fd)
            raise _changed(self.given)
        return Opened(fd, opened, name)


def open_inside(path: Path, allowed: set[Identity], given: str) -> Opened:
    """Open `path` (absolute) if it lies inside one of the `allowed` folders; `Outside` otherwise.

    `Opened.fd` is -1 when the name is not a regular file (it was looked at, never opened). Other
    OSErrors (permissions, I/O) propagate for the caller to word.
    """
    walk = _Walk(given, allowed)
    try:
        return walk.run(path)
    finally:
        walk.close()


def _changed(given: str) -> ImageInputError:
    return ImageInputError(
        f"{given} changed while it was being read (a folder on its way was moved); try again"
    )
