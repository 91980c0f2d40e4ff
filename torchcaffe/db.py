"""Key-value databases of Caffe's data layers: LMDB and LevelDB.

Records are read in the DB's key order (bytewise, as Caffe's cursors walk
them) and the reader wraps to the first record at the end. `lmdb` and
`plyvel` are optional packages (`pip install -e ".[data]"`); a backend whose
package is missing is a clear error naming it.
"""
from __future__ import annotations

import os
import threading
import weakref
from typing import Iterator

from .errors import CaffeError

BACKENDS = ("leveldb", "lmdb")  # DataParameter.DB enum order: LEVELDB = 0, LMDB = 1
_LMDB_MAP_SIZE = 1 << 40  # address space only; the file grows as written


def backend_name(backend: int | str) -> str:
    """'lmdb' / 'leveldb' from a DataParameter.DB value or a name."""
    if isinstance(backend, int):
        if not 0 <= backend < len(BACKENDS):
            raise CaffeError(f"unknown DB backend {backend}")
        return BACKENDS[backend]
    name = backend.lower()
    if name not in BACKENDS:
        raise CaffeError(f"unknown DB backend '{backend}' (use lmdb or leveldb)")
    return name


def _import(backend: str):
    package = "lmdb" if backend == "lmdb" else "plyvel"
    try:
        return __import__(package)
    except ImportError:
        raise CaffeError(f"the {backend} backend needs the Python package '{package}' "
                         f"(pip install {package}, or the project's [data] extra)") from None


def _open_lmdb(lmdb, path: str):
    try:
        return lmdb.open(path, readonly=True, lock=True, readahead=False, max_readers=126)
    except (lmdb.ReadonlyError, PermissionError):
        # a read-only folder cannot hold lock.mdb; read without the lock
        return lmdb.open(path, readonly=True, lock=False, readahead=False)


class _SharedDB:
    """One open handle per DB folder and process (LMDB and LevelDB refuse a
    second): readers of the same DB (a train and a test net) share it; it
    closes when the last reader is gone."""

    _open: "weakref.WeakValueDictionary[str, _SharedDB]" = weakref.WeakValueDictionary()
    _lock = threading.Lock()

    def __init__(self, handle):
        self.handle = handle

    @classmethod
    def get(cls, backend: str, module, path: str) -> "_SharedDB":
        key = os.path.realpath(path)
        with cls._lock:
            shared = cls._open.get(key)
            if shared is None:
                handle = (_open_lmdb(module, path) if backend == "lmdb"
                          else module.DB(path, create_if_missing=False))
                shared = cls._open[key] = cls(handle)
            return shared

    def __del__(self):
        self.handle.close()


class Reader:
    """Read-only access to a DB: `first()` and an endless key-order walk
    `cycle()` that wraps as Caffe's cursor does."""

    def __init__(self, path: str | os.PathLike, backend: int | str):
        self.path = os.fspath(path)
        self.backend = backend_name(backend)
        module = _import(self.backend)
        if not os.path.isdir(self.path):
            raise CaffeError(f"{self.backend} database {self.path}: no such folder")
        try:
            self._shared = _SharedDB.get(self.backend, module, self.path)
            self._db = self._shared.handle
        except Exception as exc:  # the packages raise their own error types
            raise CaffeError(f"cannot open {self.backend} database {self.path}: {exc}") from None
        if self.first() is None:
            raise CaffeError(f"{self.backend} database {self.path} is empty")

    def first(self) -> tuple[bytes, bytes] | None:
        for item in self.walk():
            return item
        return None

    def walk(self) -> Iterator[tuple[bytes, bytes]]:
        if self.backend == "lmdb":
            with self._db.begin(buffers=False) as txn:
                yield from txn.cursor().iternext(keys=True, values=True)
        else:
            yield from self._db.iterator()

    def cycle(self, skip: int = 0) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in key order forever, starting `skip` records in."""
        while True:
            for item in self.walk():
                if skip:
                    skip -= 1
                    continue
                yield item

    def __len__(self) -> int:
        if self.backend == "lmdb":
            return self._db.stat()["entries"]
        return sum(1 for _ in self._db.iterator(include_value=False))

class Writer:
    """A new DB (an existing one is an error, as Caffe's NEW mode), written
    in transactions of `commit_every` records."""

    def __init__(self, path: str | os.PathLike, backend: int | str, commit_every: int = 1000):
        self.path = os.fspath(path)
        self.backend = backend_name(backend)
        module = _import(self.backend)
        if os.path.exists(self.path):
            raise CaffeError(f"{self.backend} database {self.path} already exists")
        if self.backend == "lmdb":
            os.makedirs(self.path)
            self._db = module.open(self.path, map_size=_LMDB_MAP_SIZE)
        else:
            self._db = module.DB(self.path, create_if_missing=True, error_if_exists=True)
        self._pending: list[tuple[bytes, bytes]] = []
        self.commit_every = commit_every

    def put(self, key: bytes, value: bytes) -> None:
        self._pending.append((key, value))
        if len(self._pending) >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        if self.backend == "lmdb":
            with self._db.begin(write=True) as txn:
                for key, value in self._pending:
                    txn.put(key, value)
        else:
            with self._db.write_batch() as batch:
                for key, value in self._pending:
                    batch.put(key, value)
        self._pending = []

    def close(self) -> None:
        self.commit()
        self._db.close()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
