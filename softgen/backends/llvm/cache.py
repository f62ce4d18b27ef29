"""The on-disk kernel cache: JIT object code kept between processes.

An entry is the object file LLVM made for one kernel, named by a digest of everything that
decides its bytes: softgen's version and a fingerprint of its own source files (so an edited
checkout never reads code built by another), the LLVM version, the target (triple, CPU,
features), the kernel's name, its IR program and its schedule.  The file repeats that key
and a digest of the object, so an entry that is truncated, corrupt or written for another
key is ignored and rebuilt rather than linked.

Writes are atomic (a temporary file in the same directory, then a rename), so processes
sharing the directory never see half an entry.  The directory is the platform's user cache
directory (platformdirs), or $SOFTGEN_CACHE_DIR; SOFTGEN_CACHE=0 turns the cache off.  When
the entries pass the size cap ($SOFTGEN_CACHE_MAX_MB, default 256) the least recently used
go first.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ...version import __version__

MAGIC = b"softgen-kernel-cache 1\n"
SUFFIX = ".sgk"
DEFAULT_MAX_MB = 256
_DIGEST = 32  # bytes of a sha256


def enabled() -> bool:
    return os.environ.get("SOFTGEN_CACHE", "1").strip().lower() not in ("0", "off", "no", "false")


def directory() -> Path:
    given = os.environ.get("SOFTGEN_CACHE_DIR")
    if given:
        return Path(given)
    import platformdirs  # only when the cache is used: `import softgen` stays light
    return Path(platformdirs.user_cache_dir("softgen")) / "kernels"


def max_bytes() -> int:
    text = os.environ.get("SOFTGEN_CACHE_MAX_MB", str(DEFAULT_MAX_MB))
    try:
        return max(0, int(float(text) * 2**20))
    except ValueError:
        raise ValueError(f"SOFTGEN_CACHE_MAX_MB must be a number of megabytes, not {text!r}") from None


@lru_cache(maxsize=None)
def source_fingerprint() -> str:
    """A digest of softgen's own source files: any edit to the code generator changes it."""
    package = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".j2") and path.is_file():
            digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def key(**parts: str) -> str:
    """The key of an entry: the parts that decide the object, with softgen's own."""
    return json.dumps({"softgen": __version__, "source": source_fingerprint(), **parts}, sort_keys=True)


def _path(key_text: str) -> Path:
    return directory() / (hashlib.sha256(key_text.encode()).hexdigest() + SUFFIX)


def load(key_text: str) -> bytes | None:
    """The object stored under key_text, or None (missing, unreadable, corrupt or foreign)."""
    if not enabled():
        return None
    path = _path(key_text)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    obj = _unpack(data, key_text.encode())
    if obj is not None:
        try:
            os.utime(path)  # recently used: the last to be evicted
        except OSError:
            pass
    return obj


def _head(key_bytes: bytes) -> bytes:
    """An entry's start: the format, then its key (the object's digest and the object follow)."""
    return MAGIC + len(key_bytes).to_bytes(8, "little") + key_bytes


def _unpack(data: bytes, key_bytes: bytes) -> bytes | None:
    head = _head(key_bytes)
    if not data.startswith(head) or len(data) < len(head) + _DIGEST:
        return None
    digest, obj = data[len(head):len(head) + _DIGEST], data[len(head) + _DIGEST:]
    return obj if hashlib.sha256(obj).digest() == digest else None


def store(key_text: str, obj: bytes) -> None:
    """Keep obj under key_text (atomically), then hold the directory to its size cap.  A
    cache that cannot be written is no error: the kernel just compiles again next time."""
    if not enabled():
        return
    data = _head(key_text.encode()) + hashlib.sha256(obj).digest() + obj
    path = _path(key_text)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            _unlink(Path(tmp))
            raise
    except OSError:
        return
    evict(max_bytes())


@dataclass(frozen=True)
class Info:
    directory: Path
    entries: int
    bytes: int
    max_bytes: int
    enabled: bool


def _entries() -> list[tuple[float, int, Path]]:
    """(last use, size, path) of each entry, oldest first."""
    found = []
    try:
        paths = list(directory().glob("*" + SUFFIX))
    except OSError:
        return []
    for path in paths:
        try:
            st = path.stat()
        except OSError:  # evicted by another process meanwhile
            continue
        found.append((st.st_mtime, st.st_size, path))
    return sorted(found)


def info() -> Info:
    entries = _entries()
    return Info(directory(), len(entries), sum(size for _, size, _ in entries), max_bytes(), enabled())


def evict(limit: int) -> int:
    """Remove the least recently used entries until they fit in `limit` bytes; the number
    removed."""
    entries = _entries()
    total = sum(size for _, size, _ in entries)
    removed = 0
    for _, size, path in entries:
        if total <= limit:
            break
        _unlink(path)
        total -= size
        removed += 1
    return removed


def clear() -> int:
    """Remove every entry (and stray temporary files); the number of entries removed."""
    removed = evict(0)
    for tmp in directory().glob(".tmp-*" + SUFFIX) if directory().is_dir() else ():
        _unlink(tmp)
    return removed


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
