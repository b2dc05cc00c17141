"""Atomic writes (temp file or folder, then rename) and checksums, so nothing is ever left half-written."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ConfigError, VggbenchError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _default_mode(tmp: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries; give the result the usual permissions."""
    os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_writable(path: str | os.PathLike, *, folder: bool, label: str) -> Path:
    """`path`, or a ConfigError naming `label` (e.g. --out) unless it can be written as a folder (`folder`) or
    a file: an existing one of that kind, or a new one in a folder that exists or can be made. Checked before
    work starts, so that a typo does not cost a run."""
    path = Path(path)
    kind = "folder" if folder else "file"
    if path.exists() and path.is_dir() != folder:
        raise ConfigError(f"{label} {path} is a {'file' if folder else 'folder'}, not a {kind}")
    parent = path if folder and path.exists() else path.parent
    while not parent.exists() and parent != parent.parent:  # the nearest folder that exists
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{label} {path}: {parent} is a file, so no {kind} can be made under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{label} {path}: {parent} is not writable")
    return path


def writable_folder(value):
    """A setting's `parse` for an output folder (--out): the value as given, once it is known that it can be
    written (a file or a read-only place cannot); None stays None."""
    if isinstance(value, str):
        check_writable(value, folder=True, label="--out")
    return value


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _default_mode(tmp, directory=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


# a temp folder beside its target is named .NAME.PID.XXXXXXXX.tmp: a later writer of NAME removes those whose
# process is gone (a kill -9 or a power cut leaves them behind; an export of VGG16 is 1.6 GB)
_TMP_DIR = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temp_dirs(path: str | os.PathLike) -> list[Path]:
    """Remove the temp folders that writers of `path` which no longer run left beside it; returns them."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        match = _TMP_DIR.fullmatch(entry.name)
        if match and match["name"] == path.name and entry.is_dir() and not _alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # glibc before 2.28, musl
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # e.g. a file system without it
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(b))


def check_replaceable(path: str | os.PathLike, *, force: bool, not_ours: Callable[[Path], str | None] | None = None,
                      what: str = "folder", hint: str = "pass --force to replace it") -> None:
    """Raise a VggbenchError (exit 2) unless `path` may be replaced: it does not exist, or `force` is given and it is
    empty or vggbench made it. not_ours: why an existing `path` is not vggbench's (None when it is); without it, only
    an empty folder counts as vggbench's. `--force` never replaces what vggbench did not make: the user's files."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink():
        raise VggbenchError(f"{path} is a symbolic link; vggbench replaces only a {what} it made: choose another --out")
    if not force:
        raise VggbenchError(f"{path} already exists; {hint}")
    if what == "folder" and not path.is_dir():
        raise VggbenchError(f"{path} exists and is not a folder")
    empty = path.is_dir() and not any(path.iterdir())
    why = None if empty else (not_ours(path) if not_ours is not None else "vggbench cannot tell that it made it")
    if why:
        raise VggbenchError(f"{path} is not replaced, even with --force: {why}; vggbench replaces only a {what} it "
                            f"made. Choose another --out, or move it away yourself")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False,
               not_ours: Callable[[Path], str | None] | None = None) -> Iterator[Path]:
    """Yield an empty temp folder beside `path`; on success it takes the place of `path`.

    An existing `path` is replaced only with `force`, and only when it is empty or `not_ours(path)` says vggbench
    made it (returns None; see check_replaceable), and only once the new folder is complete, so a failed write
    leaves the old folder as it was. On Linux the two are swapped in one step (renameat2), so the name is never
    empty; elsewhere the old folder is renamed away just before the new one is renamed in. Temp folders left beside
    `path` by killed writers are removed first.
    """
    path = Path(path)
    check_replaceable(path, force=force, not_ours=not_ours)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _default_mode(tmp, directory=True)
        check_replaceable(path, force=force, not_ours=not_ours)  # again: files may have been put there meanwhile
        if path.exists() and _exchange(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # it holds the old folder now
        elif path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
            os.replace(path, old / "replaced")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, wait: bool = False) -> Iterator[None]:
    """Hold an advisory lock on `path` (a run or export folder) for the block: a second vggbench process that asks
    for it gets a VggbenchError at once instead of writing into the same folder. The lock is `.NAME.lock` beside
    it (flock: released by the kernel when a process dies), removed on release; where flock does not exist (Windows)
    there is none. wait: wait for the holder instead of raising."""
    path = Path(path)
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise VggbenchError(f"{path} is in use by another vggbench process (pid {holder}); wait for it to "
                                f"finish or choose another --out") from None
        # the holder before us removes the file as it lets go: what we locked must still be the file at the name
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held, so no lock file is left beside the folder
        os.close(fd)  # closing releases the lock
