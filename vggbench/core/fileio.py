"""Atomic writes (temp file or folder, then rename) and checksums, so nothing is ever left half-written."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import io
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ConfigError, VggbenchError, WriteError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _default_mode(tmp: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries; give the result the usual permissions."""
    os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 of the regular file `path`; an OSError for anything else (a fifo is not waited on)."""
    from .documents import open_regular

    digest = hashlib.sha256()
    with open_regular(path) as f:
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


# the errors of a write that a user can do something about (room, quota, rights), as opposed to a bug
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})


def write_failure(e: BaseException) -> OSError | WriteError | None:
    """The failed write behind `e`: a WriteError, an OSError of room or rights (ENOSPC, EFBIG, EDQUOT, EROFS,
    EACCES, ...), or such an OSError that a writer turned into a RuntimeError of its own (torch.save does); None
    for any other error, which is a bug or bad input and goes on as it is."""
    if isinstance(e, WriteError):
        return e
    if isinstance(e, OSError):
        return e if e.errno in WRITE_ERRNOS else None
    inner = e.__cause__ or e.__context__
    if isinstance(e, RuntimeError) and isinstance(inner, OSError) and inner.errno in WRITE_ERRNOS:
        return inner
    return None


def _absolute(name) -> Path | None:
    return Path(os.path.abspath(os.fsdecode(name))) if isinstance(name, (str, bytes, os.PathLike)) else None


def _named(e: BaseException, path: Path, tmp: Path | None, existed: bool, kind: str) -> WriteError | None:
    """`e` as a WriteError that names `path` (or the file under it, for a folder), never the temp name; None when
    `e` is no failed write of this target (an error of the block's own, or a file it read)."""
    failure = write_failure(e)
    if failure is None:
        return None
    target, scratch = _absolute(path), _absolute(tmp) if tmp is not None else None
    name = _absolute(failure.path if isinstance(failure, WriteError) else failure.filename)
    # a copy (shutil.copyfile, os.link) names its source first and the file it failed to write second
    written = None if isinstance(failure, WriteError) else _absolute(getattr(failure, "filename2", None))
    if written is not None and scratch is not None and (written == scratch or scratch in written.parents):
        name = written
    if scratch is not None and name is not None and (name == scratch or scratch in name.parents):
        public = path / name.relative_to(scratch) if name != scratch else path
    elif isinstance(failure, WriteError):
        public = failure.path
    elif name is None or name == target or name.parent == target.parent or name in target.parents:
        public = path  # the write itself, the temp entry beside the target, or a folder on the way to it
    else:
        return None  # another file's error, e.g. one the block read
    reason = failure.reason if isinstance(failure, WriteError) else (failure.strerror or str(failure))
    kept = [failure.kept] if isinstance(failure, WriteError) and failure.kept else []
    if existed:
        kept.append(f"the old {kind} is unchanged")
    return WriteError(public, reason, "; ".join(kept))


def _names_failed_writes(kind: str):
    """Turn a failed write of the decorated context manager's target, in the block or in its own steps (temp,
    rename), into one WriteError naming the target; every other exception goes on unchanged."""
    def decorate(factory):
        @functools.wraps(factory)
        @contextlib.contextmanager
        def managed(path, *args, **kwargs):
            path, tmp = Path(path), None
            existed = os.path.exists(path)
            try:
                with factory(path, *args, **kwargs) as tmp:
                    yield tmp
            except Exception as e:
                error = _named(e, path, tmp, existed, kind)
                if error is None:
                    raise
                raise error from None
        return managed
    return decorate


@_names_failed_writes("file")
@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is removed. A write that fails
    for want of room or rights (in the block or here) is a WriteError naming `path`."""
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


class _Sink(io.RawIOBase):
    """A file that keeps the first OSError of its writes and drops the writes after it, so that a serialiser in
    C++ finishes instead of failing half-way (see atomic_stream)."""

    def __init__(self, file) -> None:
        super().__init__()
        self.file, self.error = file, None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.file.seekable()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def write(self, data) -> int:
        if self.error is None:
            try:
                return self.file.write(data)
            except OSError as e:
                self.error = e
        return len(memoryview(data))


@contextlib.contextmanager
def atomic_stream(path: str | os.PathLike) -> Iterator[io.RawIOBase]:
    """A binary file that writes `path` atomically, for torch's serialisers (torch.save, torch.jit.save,
    torch.export.save). Given a path, their C++ writer reports a full disk as "unexpected pos", or aborts the
    process from a destructor; through this file it finishes, and the disk's OSError is raised after it (a
    WriteError naming `path`, as atomic_file's)."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        sink = _Sink(f)
        try:
            yield sink
        except Exception:
            if sink.error is None:
                raise
            raise sink.error from None
        if sink.error is not None:
            raise sink.error


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
        if not match or match["name"] != path.name or _alive(int(match["pid"])):
            continue
        try:
            st = os.lstat(entry)
        except FileNotFoundError:
            continue
        # only a real folder of our own: a planted symlink (is_dir follows it) or another user's folder is left alone
        if stat.S_ISDIR(st.st_mode) and (not hasattr(os, "getuid") or st.st_uid == os.getuid()):
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


@_names_failed_writes("folder")
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


def _lock_fd(lock: Path) -> tuple[int, bool]:
    """Open the lock file without following a symlink: (fd, whether this call created it)."""
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    while True:
        try:
            return os.open(lock, flags | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            pass
        try:
            # a stale lock of someone else's may be read-only to us: locking needs no write access
            return os.open(lock, (flags & ~os.O_RDWR) | os.O_RDONLY), False
        except FileNotFoundError:  # its holder removed it in between: create it again
            continue
        except OSError as e:  # ELOOP: a symlink; EISDIR, ENXIO...: something else planted at the name
            raise VggbenchError(f"{lock} is not a lock file vggbench made ({e.strerror}); remove it if it is "
                                f"not yours") from None


def _names_failed_lock(factory):
    """A lock that cannot be made or written (its pid) is a WriteError naming the lock file; errors of the block
    it guards go on unchanged."""
    @functools.wraps(factory)
    @contextlib.contextmanager
    def managed(path, *args, **kwargs):
        path = Path(path)
        manager = factory(path, *args, **kwargs)
        try:
            manager.__enter__()
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            lock = path.parent / f".{path.name}.lock"
            raise WriteError(e.filename or lock, e.strerror or str(e), "nothing was started") from None
        with contextlib.ExitStack() as stack:
            stack.push(manager)
            yield
    return managed


@_names_failed_lock
@contextlib.contextmanager
def exclusive(path: str | os.PathLike, wait: bool = False) -> Iterator[None]:
    """Hold an advisory lock on `path` (a run or export folder) for the block: a second vggbench process that asks
    for it gets a VggbenchError at once instead of writing into the same folder. The lock is `.NAME.lock` beside
    the folder `path` resolves to (so two paths to one folder, through a symlink, share it; flock: released by the
    kernel when a process dies), removed on release; where flock does not exist (Windows) there is none. wait: wait
    for the holder instead of raising.

    The lock file never becomes a weapon: a symlink, fifo or folder at its name is refused, and the pid is written
    only into a file this call created (O_EXCL), never into one found there, which is locked as found and then
    replaced once its holder is known to be gone."""
    path = Path(path).resolve()
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    while True:
        fd, created = _lock_fd(lock)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise VggbenchError(f"{lock} is not a regular file, so not a lock vggbench made; remove it if it is not "
                                f"yours")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise VggbenchError(f"{path} is in use by another vggbench process (pid {holder}); wait for it to "
                                f"finish or choose another --out") from None
        # the holder before us removes the file as it lets go: what we locked must still be the file at the name
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(lock))
        except FileNotFoundError:
            same = False
        if same and not created:
            # a lock left by a process that died: we hold it, so nobody else does; replace it by one of ours
            # rather than write into a file we did not make (it may be a hard link to someone's file)
            lock.unlink(missing_ok=True)
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.pwrite(fd, str(os.getpid()).encode(), 0)  # into the empty file created above: nothing is truncated
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held, so no lock file is left beside the folder
        os.close(fd)  # closing releases the lock
