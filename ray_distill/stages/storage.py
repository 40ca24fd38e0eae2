"""The durable copy of a run directory (`run.storage`): a cloud URI or a path, opened by pyarrow.

A cluster's disks go away with the cluster, so the pipeline copies each stage's outputs and the
manifest to the storage when the stage ends (`push`) and starts a run by fetching what the local run
directory lacks (`pull`): a run continues on a new cluster where the last one stopped. pyarrow opens
s3://, gs://, hdfs://, abfs:// and file:// natively; any other scheme an installed fsspec
implementation knows goes through pyarrow's fsspec handler.

The storage holds an index (`INDEX`) of every stored file's size and its modification time in the
run directory. A push stores the files whose version the index lacks and forgets (and deletes) the
stored files under the pushed directories that are gone locally, such as pruned checkpoints. A pull
fetches the files the run directory lacks or holds in an older version, never replacing a newer
local file (work done after the last push, e.g. before a kill), and gives each its original time
back, so a fetched run looks to the stages exactly as it did where it was made (input fingerprints
that include file times, such as the index stage's corpus, stay valid). Fetched files land under a
temporary name first, and the index is written after the files it lists, so a crash never leaves
half a file under its own name nor an index entry without its file; a pull refuses an index entry
outside the run directory and a fetched file whose size is not its entry's. Temporary files of atomic
writes are never stored.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, ContextManager, Iterable, Optional

from ray_distill.errors import DataError, UserError, brief, first_line, is_text
from ray_distill.fileio import parse_json

log = logging.getLogger(__name__)
INDEX = ".ray-distill-storage.json"
_THREADS = 8


def open_filesystem(uri: str):
    """(pyarrow filesystem, root path inside it) for a URI or a local path."""
    import pyarrow.fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    where = f"run.storage {brief(uri)}"
    if not uri.partition("://")[0]:
        raise UserError(f"{where}: names no scheme before '://' (s3, gs, file, ...)")
    try:
        filesystem, root = pafs.FileSystem.from_uri(uri)
    except ValueError as native_error:  # pyarrow does not know the scheme, or cannot parse the URI
        try:
            import fsspec
            from fsspec.core import split_protocol

            protocol, root = split_protocol(uri)
            filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(protocol)))
        except Exception as e:  # fsspec's filesystems refuse arguments with all sorts of errors
            raise UserError(f"{where}: pyarrow cannot open it ({first_line(native_error)}) and neither can fsspec "
                            f"({first_line(e)}); install the fsspec package for that scheme") from None
        if any(c in root for c in "*?["):  # fsspec's move would copy the index into a directory of that name
            raise UserError(f"{where}: fsspec reads *, ? and [ in a path as wildcards; name the storage without them")
    except Exception as e:  # e.g. an S3 bucket's region that cannot be looked up, HDFS without Java
        raise UserError(f"{where}: cannot open it: {first_line(e)}") from None
    if not root.strip("/"):
        raise UserError(f"{where}: names no bucket or directory to store the run in")
    return filesystem, root.rstrip("/")


class RunStorage:
    """`local` (the run directory) mirrored at `uri`. Where several run directories push to one storage at
    once (a sweep's trials on nodes without a shared mount), `lock` makes each push's update of the index
    one at a time; each then writes only its own changes."""

    def __init__(self, uri: str, local: Path, lock: Callable[[], ContextManager] = nullcontext):
        self.uri = uri
        self.local = Path(local).resolve()
        self.fs, self.root = open_filesystem(uri)
        self._lock = lock

    def _remote(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    @contextmanager
    def _errors(self, doing: str):
        """A failure of the storage (unreachable, refused, a path it cannot hold) as one line naming it."""
        import pyarrow as pa

        try:
            yield
        except (OSError, ValueError, NotImplementedError, pa.ArrowException) as e:
            raise UserError(f"run.storage {brief(self.uri)}: cannot {doing}: {first_line(e)}") from None

    def stored(self) -> dict[str, list[int]]:
        """The storage's index: file path relative to the run -> [size, mtime_ns]."""
        import pyarrow.fs as pafs

        with self._errors(f"read its index {INDEX}"):
            if self.fs.get_file_info(self._remote(INDEX)).type != pafs.FileType.File:
                return {}
            with self.fs.open_input_stream(self._remote(INDEX)) as handle:
                data = handle.read()
        where = f"run.storage {brief(self.uri)}: {INDEX}"
        index = parse_json(data, where)
        if not isinstance(index, dict):
            raise DataError(f"{where}: expected an object, got {type(index).__name__}")
        for relative, version in index.items():
            if not _is_relative(relative):
                raise DataError(f"{where}: {brief(relative)} is not a path inside the run directory")
            if not (isinstance(version, list) and len(version) == 2 and all(
                    isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**63 for n in version)):
                raise DataError(f"{where}: {brief(relative)}: expected [size, mtime_ns], got {brief(version)}")
        return index

    def pull(self, under: Optional[Iterable[Path]] = None) -> int:
        """Fetch every stored file the run directory lacks or holds in an older version (only those under the
        files or directories `under`, if given); returns how many."""
        prefixes = None if under is None else self._inside(under, "fetched from")
        todo = []
        for relative, (size, mtime_ns) in self.stored().items():
            if prefixes is not None and not any(_is_under(relative, prefix) for prefix in prefixes):
                continue
            path = self.local / relative
            if not path.is_file() or path.stat().st_mtime_ns < mtime_ns:
                todo.append((relative, size, mtime_ns))
        self._run(self._download, todo, f"fetching the run from {self.uri}")
        return len(todo)

    def push(self, paths: Iterable[Path]) -> int:
        """Store the files under `paths` (files or directories inside the run directory) whose version the
        storage lacks, and forget those gone locally; returns how many files were stored."""
        index = self.stored()
        todo, present = [], set()
        prefixes = self._inside(paths, "copied to")
        for prefix in prefixes:
            path = self.local / prefix
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            for file in files:
                if _is_temporary(file.name):
                    continue
                relative = file.relative_to(self.local).as_posix()
                present.add(relative)
                version = _version(file)
                if index.get(relative) != version:
                    todo.append((relative, version))
        self._run(self._upload, [relative for relative, _ in todo], f"copying to {self.uri}")
        with self._lock():
            # Read again: another run directory may have pushed meanwhile, and its entries stay.
            index = self.stored()
            gone = [k for k in index if k not in present and any(_is_under(k, prefix) for prefix in prefixes)]
            if todo or gone:
                for relative in gone:
                    del index[relative]
                index.update(todo)
                self._write_index(index)
        self._run(self._delete, gone, f"deleting from {self.uri} what the run no longer has")
        return len(todo)

    def push_after_failure(self, paths: Iterable[Path]) -> None:
        """`push` for work that failed: a failed copy is logged, since the work's own error is the one to report."""
        try:
            self.push(paths)
        except Exception:
            log.exception("copying the failed work's outputs to %s failed", self.uri)

    def _inside(self, paths: Iterable[Path], doing: str) -> list[str]:
        """`paths` relative to the run directory ("" for the directory itself); those outside it are left out,
        and the log says so."""
        inside = []
        for path in paths:
            path = Path(path).expanduser().resolve()
            if path.is_relative_to(self.local):
                inside.append("" if path == self.local else path.relative_to(self.local).as_posix())
            else:
                log.warning("%s is outside the run directory %s: not %s %s", path, self.local, doing, self.uri)
        return inside

    def _write_index(self, index: dict[str, list[int]]) -> None:
        partial = self._remote(INDEX + ".tmp")
        with self._errors(f"write its index {INDEX}"):
            with self.fs.open_output_stream(partial) as handle:
                handle.write(json.dumps(index, sort_keys=True).encode())
            self.fs.move(partial, self._remote(INDEX))

    def _run(self, work, items: list, description: str) -> None:
        if not items:
            return
        log.debug("%s: %d file(s)", description, len(items))  # the stage's "stored at" line says where
        with ThreadPoolExecutor(_THREADS) as pool:
            for _ in pool.map(work, items):
                pass

    def _download(self, item: tuple[str, int, int]) -> None:
        relative, size, mtime_ns = item
        path = self.local / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".pull-{uuid.uuid4().hex[:8]}-{path.name}")  # two pulls of one file can overlap
        try:
            with self._errors(f"fetch {relative}"):
                with self.fs.open_input_stream(self._remote(relative)) as source, open(partial, "wb") as target:
                    shutil.copyfileobj(source, target, 1 << 20)
        except BaseException:  # named uniquely, so the next fetch would not overwrite it
            partial.unlink(missing_ok=True)
            raise
        fetched = partial.stat().st_size
        if fetched != size:  # overwritten by a push that died before writing its index
            partial.unlink()
            raise DataError(f"run.storage {brief(self.uri)}: {relative} holds {fetched} bytes, its index says {size} "
                            "(a copy cut short); push it again from a run directory that has it")
        os.utime(partial, ns=(mtime_ns, mtime_ns))
        os.replace(partial, path)

    def _delete(self, relative: str) -> None:
        with self._errors(f"delete {relative}"):
            try:
                self.fs.delete_file(self._remote(relative))
            except FileNotFoundError:  # deleted by an earlier push that died before writing its index
                pass

    def _upload(self, relative: str) -> None:
        remote = self._remote(relative)
        with self._errors(f"copy {relative} there"):
            self.fs.create_dir(remote.rsplit("/", 1)[0], recursive=True)
            with open(self.local / relative, "rb") as source, self.fs.open_output_stream(remote) as target:
                shutil.copyfileobj(source, target, 1 << 20)


class PeriodicPush:
    """While the `with` block runs, push `paths` every `interval` seconds from a background thread, so a
    job killed outright keeps the last copy. A failed copy is logged and retried at the next interval:
    the stage goes on. With `last`, the block's end pushes once more, also when the block failed (then a
    failed copy is only logged)."""

    def __init__(self, storage: "RunStorage | None", paths: list[Path], interval: float, last: bool = False):
        self.storage, self.paths, self.interval, self.last = storage, paths, interval, last
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self) -> "PeriodicPush":
        if self.storage and self.interval > 0:
            self._thread = threading.Thread(target=self._loop, name="run-storage-push", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self.last and self.storage:
            if exc_type is None:
                self.storage.push(self.paths)
            else:
                self.storage.push_after_failure(self.paths)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.push(self.paths)
            except Exception:
                log.exception("copying the running stage's outputs to %s failed; trying again in %.0f s",
                              self.storage.uri, self.interval)


def _is_under(relative: str, prefix: str) -> bool:
    return not prefix or relative == prefix or relative.startswith(prefix + "/")


def _is_temporary(name: str) -> bool:
    """Files of an atomic write in progress (fileio, the record store) or of a fetch."""
    return name.startswith((".tmp-", ".pull-")) or name.endswith(".tmp")


def _is_relative(name: str) -> bool:
    """Whether an index entry names a file inside the run directory (a pull writes where it says) that a
    filesystem can hold."""
    return is_text(name) and all(part not in ("", ".", "..") and len(part.encode()) <= 255 for part in name.split("/"))


def _version(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]
