"""Where archive objects live: a local directory (default) or S3-compatible object storage through fsspec.

Objects are written whole (a local file is renamed into place; an S3 PUT is atomic), never appended to.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from streams.errors import StreamsError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ArchiveError", "ArchiveStore", "LocalStore", "ObjectStore", "open_store"]


class ArchiveError(StreamsError):
    """The archive cannot be read or written, or is not what it should be."""


class ArchiveStore(Protocol):
    """Objects by relative path ("<topic>/<partition>/<name>")."""

    url: str

    def put(self, name: str, *parts: bytes | memoryview) -> None: ...
    def get(self, name: str) -> bytes: ...
    def exists(self, name: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, name: str) -> None: ...


class LocalStore:
    """A directory; a write goes to a temporary file, is fsynced and renamed, and the rename is made durable
    (the directory fsynced) before put returns, so a reader never sees half and a crash never loses a put."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def put(self, name: str, *parts: bytes | memoryview) -> None:
        """Write the object `name` as the concatenation of `parts` (written as they are, not joined)."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "wb") as file:
                file.writelines(parts)
                file.flush()
                os.fsync(file.fileno())
            Path(temporary).replace(path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        # The rename is durable only once the directory is: until then a crash could lose the object after
        # put returned (the archiver commits offsets right after its puts).
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def get(self, name: str) -> bytes:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            raise ArchiveError(f"{self.root / name} does not exist") from None

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(
            str(path.relative_to(self.root))
            for path in base.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


class ObjectStore:
    """An fsspec filesystem under `url` (s3://bucket/prefix; the endpoint and keys from `options`)."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        try:
            import fsspec  # noqa: PLC0415 - only archives in object storage need it
        except ImportError as exc:
            raise ArchiveError(f"an archive at {url} needs fsspec and s3fs: pip install 'streams[archive]'") from exc
        self.url = url.rstrip("/")
        self._fs, self._root = fsspec.core.url_to_fs(self.url, **dict(options or {}))

    def _path(self, name: str) -> str:
        return f"{self._root}/{name}"

    def put(self, name: str, *parts: bytes | memoryview) -> None:
        data = parts[0] if len(parts) == 1 else b"".join(parts)  # one PUT, atomic
        try:
            self._fs.pipe_file(self._path(name), bytes(data))
        except (OSError, ValueError) as exc:  # s3fs maps S3 errors to OSErrors (a missing bucket: FileNotFound)
            raise ArchiveError(f"cannot write {self.url}/{name}: {exc}") from exc

    def get(self, name: str) -> bytes:
        try:
            return bytes(self._fs.cat_file(self._path(name)))
        except FileNotFoundError:
            raise ArchiveError(f"{self.url}/{name} does not exist") from None

    def exists(self, name: str) -> bool:
        return bool(self._fs.exists(self._path(name)))

    def list(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        self._fs.invalidate_cache(path)  # fsspec caches listings; the archiver and verify need what is there now
        try:
            found = self._fs.find(path)
        except FileNotFoundError:
            return []
        start = len(self._root) + 1
        return sorted(str(path)[start:] for path in found)

    def delete(self, name: str) -> None:
        try:
            self._fs.rm_file(self._path(name))
        except FileNotFoundError:
            return


def open_store(location: str | Path, options: Mapping[str, Any] | None = None) -> ArchiveStore:
    """A LocalStore for a path (or file://), an ObjectStore for any other URL (s3://...)."""
    text = str(location)
    if "://" not in text or text.startswith("file://"):
        return LocalStore(Path(text.removeprefix("file://")))
    return ObjectStore(text, options)
