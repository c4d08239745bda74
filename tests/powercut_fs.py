"""A FUSE filesystem for tests that forgets, at a simulated power cut, everything not made durable by fsync.

Killing a process proves little about durability: the kernel keeps what it wrote, synced or
not. This filesystem keeps each file and folder twice, as it is now and as it would be found
after a power cut, the way Jepsen's LazyFS does, and it is strict where real filesystems are
merely usually kind:

- A write or truncate changes only the file's live contents (a per-file pending overlay
  over its durable contents). ``fsync`` (or ``fdatasync``) of the file makes its whole
  contents, size and mode durable. Writes through a shared memory map reach it when the
  kernel writes the pages back, and are pending like any other write until an fsync.
- Creating, renaming and unlinking a file, and making or removing a folder, change only the
  live entries of the folders involved. ``fsync`` of a folder makes its entries as they are
  now durable: the names, and which file or folder each one is; not the contents of those
  files, and not the entries of a folder inside it, each of which needs its own fsync. A
  rename is durable only once both folders it touches are fsynced; a file made durable
  under no durable name is lost.
- ``power_cut()`` drops everything not made durable. The daemon holds the pending state in
  memory only and writes the durable state to its backing folder inside each fsync, so a
  cut is literal: the daemon dies, the mount is torn down (the kernel's page cache of it with
  it), and a new daemon mounts the backing folder. ``power_cut(keep=[...])`` first makes the
  pending entry of each named path durable, as a filesystem may that persists one change
  before another it received earlier (nothing promises the order of unsynced changes); a
  rename kept by its new name keeps its old name too, until that is synced or kept.
- Permissions are enforced with the owner's bits for every caller, root included, so that a
  test running as root meets "permission denied" as a user would (``chmod 000``, a folder
  without its write bit). Hard links and symbolic links are not supported.

SQLite works on it (WAL and its shared-memory file, POSIX locks, which the kernel keeps for a
FUSE filesystem that doesn't implement them). ``python tests/powercut_fs.py BACKING MOUNT
CONTROL_SOCKET [--ro]`` runs the daemon; ``PowercutFS`` drives it from a test.
"""

from __future__ import annotations

import ctypes.util
import errno
import functools
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = 1
FUSE_CAP_POSIX_LOCKS, FUSE_CAP_FLOCK_LOCKS = 1 << 1, 1 << 10  # fuse_common.h


class Node:
    """A file or folder as it is now: contents or entries, and mode."""

    __slots__ = ("ino", "is_dir", "mode", "data", "entries", "mtime_ns")

    def __init__(self, ino: int, is_dir: bool, mode: int, data: bytes = b"", entries: dict | None = None):
        self.ino, self.is_dir, self.mode = ino, is_dir, mode & 0o7777
        self.data = bytearray(data)
        self.entries = dict(entries or {})
        self.mtime_ns = time.time_ns()


class Tree:
    """The live tree in memory, and the durable one in ``backing`` (``state.json`` and ``data/<ino>``)."""

    def __init__(self, backing: str | os.PathLike):
        self.backing = Path(backing)
        (self.backing / "data").mkdir(parents=True, exist_ok=True)
        state_file = self.backing / "state.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else \
            {"next": ROOT + 1, "nodes": {str(ROOT): {"dir": True, "mode": 0o755, "entries": {}}}}
        self.durable = {int(ino): node for ino, node in state["nodes"].items()}
        self.next_ino = state["next"]
        self.nodes: dict[int, Node] = {}
        self._load(ROOT)

    def _load(self, ino: int) -> None:
        """Bring up the durable tree under ``ino``: what a mount after a power cut finds."""
        spec = self.durable[ino]
        if spec["dir"]:
            self.nodes[ino] = Node(ino, True, spec["mode"], entries={n: int(i) for n, i in spec["entries"].items()})
            for child in self.nodes[ino].entries.values():
                self._load(child)
        else:
            data = self.backing / "data" / str(ino)
            self.nodes[ino] = Node(ino, False, spec["mode"], data.read_bytes() if data.exists() else b"")

    def new_node(self, is_dir: bool, mode: int) -> Node:
        node = Node(self.next_ino, is_dir, mode)
        self.next_ino += 1
        self.nodes[node.ino] = node
        return node

    def sync_file(self, node: Node) -> None:
        _write_host(self.backing / "data" / str(node.ino), bytes(node.data))
        self.durable[node.ino] = {"dir": False, "mode": node.mode}
        self._save()

    def sync_entries(self, folder: Node, names=None) -> None:
        """Make the entries of ``folder`` durable: all of them, or only ``names`` (``power_cut(keep=...)``)."""
        spec = self.durable.setdefault(folder.ino, {"dir": True, "mode": folder.mode, "entries": {}})
        spec["mode"] = folder.mode
        for name in (folder.entries if names is None else names):
            if name in folder.entries:
                child = self.nodes[folder.entries[name]]
                spec["entries"][name] = child.ino
                self.durable.setdefault(child.ino, {"dir": child.is_dir, "mode": child.mode, "entries": {}}
                                        if child.is_dir else {"dir": False, "mode": child.mode})
            else:
                spec["entries"].pop(name, None)
        if names is None:
            spec["entries"] = {name: ino for name, ino in spec["entries"].items() if name in folder.entries}
        self._save()

    def _save(self) -> None:
        _write_host(self.backing / "state.json", json.dumps({"next": self.next_ino, "nodes": self.durable}).encode())


def digest(backing: str | os.PathLike) -> str:
    """A hash of the durable tree in ``backing`` as a mount would show it (names, kinds, modes, contents).

    Two snapshots with the same digest leave the same files after a power cut, however they differ
    in data no durable name reaches.
    """
    tree = Tree(backing)
    hasher = hashlib.sha256()

    def walk(ino: int, path: str) -> None:
        node = tree.nodes[ino]
        hasher.update(f"{path}\0{node.is_dir}\0{node.mode}\0".encode())
        if node.is_dir:
            for name in sorted(node.entries):
                walk(node.entries[name], f"{path}/{name}")
        else:
            hasher.update(hashlib.sha256(node.data).digest())

    walk(ROOT, "")
    return hasher.hexdigest()


def _write_host(path: Path, data: bytes) -> None:
    """A file of the backing folder replaced whole (the host is never power cut: no fsync needed)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _errno(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def locked(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.mutex:
            return method(self, *args, **kwargs)
    return wrapper


def _operations_class():
    import mfusepy

    class Operations(mfusepy.Operations):
        """The FUSE callbacks over a ``Tree``; one lock serialises them (and a power cut)."""

        use_ns = True

        def __init__(self, tree: Tree, ready: Path):
            self.tree, self.ready, self.mutex = tree, ready, threading.Lock()
            self.handles: dict[int, Node] = {}
            self.next_fh = 1

        def init_with_config(self, conn, config):
            if conn is not None:  # POSIX and BSD locks kept by the kernel (SQLite's, the store's), not by us
                conn.want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS)
            self.ready.write_text("mounted\n")

        # -- paths and permissions (the owner's bits, for every caller)
        def _lookup(self, path: str) -> Node:
            node = self.tree.nodes[ROOT]
            for part in filter(None, path.split("/")):
                if not node.is_dir:
                    raise _errno(errno.ENOTDIR)
                if not node.mode & 0o100:
                    raise _errno(errno.EACCES)
                if part not in node.entries:
                    raise _errno(errno.ENOENT)
                node = self.tree.nodes[node.entries[part]]
            return node

        def _parent(self, path: str) -> tuple[Node, str]:
            folder, _, name = path.rstrip("/").rpartition("/")
            parent = self._lookup(folder)
            if not parent.is_dir:
                raise _errno(errno.ENOTDIR)
            if parent.mode & 0o300 != 0o300:
                raise _errno(errno.EACCES)
            return parent, name

        def _node(self, path, fh) -> Node:
            return self.handles[fh] if fh else self._lookup(path)

        def _handle(self, node: Node) -> int:
            fh, self.next_fh = self.next_fh, self.next_fh + 1
            self.handles[fh] = node
            return fh

        # -- attributes
        @locked
        def getattr(self, path, fh=None):
            node = self._node(path, fh)
            kind = stat.S_IFDIR if node.is_dir else stat.S_IFREG
            return {"st_mode": kind | node.mode, "st_ino": node.ino, "st_nlink": 2 if node.is_dir else 1,
                    "st_size": len(node.data), "st_blocks": (len(node.data) + 511) // 512, "st_blksize": 65536,
                    "st_uid": os.getuid(), "st_gid": os.getgid(),
                    "st_mtime": node.mtime_ns, "st_atime": node.mtime_ns, "st_ctime": node.mtime_ns}

        @locked
        def access(self, path, amode):
            node = self._lookup(path)
            wanted = (0o400 if amode & os.R_OK else 0) | (0o200 if amode & os.W_OK else 0) | (0o100 if amode & os.X_OK else 0)
            if node.mode & wanted != wanted:
                raise _errno(errno.EACCES)
            return 0

        @locked
        def chmod(self, path, mode):
            self._lookup(path).mode = mode & 0o7777
            return 0

        def chown(self, path, uid, gid):
            return 0

        @locked
        def utimens(self, path, times=None):
            self._lookup(path).mtime_ns = times[1] if times else time.time_ns()
            return 0

        def statfs(self, path):
            return {"f_bsize": 65536, "f_frsize": 65536, "f_blocks": 1 << 20, "f_bfree": 1 << 19, "f_bavail": 1 << 19,
                    "f_files": 1 << 20, "f_ffree": 1 << 19, "f_favail": 1 << 19, "f_namemax": 255}

        # -- folders
        @locked
        def readdir(self, path, fh):
            node = self._lookup(path)
            if not node.mode & 0o400:
                raise _errno(errno.EACCES)
            kinds = {True: stat.S_IFDIR, False: stat.S_IFREG}
            listed = [(".", node), ("..", node)] + [(name, self.tree.nodes[ino]) for name, ino in node.entries.items()]
            return [(name, {"st_ino": n.ino, "st_mode": kinds[n.is_dir]}, 0) for name, n in listed]  # ino 0: skipped

        @locked
        def mkdir(self, path, mode):
            parent, name = self._parent(path)
            if name in parent.entries:
                raise _errno(errno.EEXIST)
            parent.entries[name] = self.tree.new_node(True, mode).ino
            return 0

        @locked
        def rmdir(self, path):
            parent, name = self._parent(path)
            node = self._lookup(path)
            if not node.is_dir:
                raise _errno(errno.ENOTDIR)
            if node.entries:
                raise _errno(errno.ENOTEMPTY)
            del parent.entries[name]
            return 0

        @locked
        def unlink(self, path):
            parent, name = self._parent(path)
            if self._lookup(path).is_dir:
                raise _errno(errno.EISDIR)
            del parent.entries[name]
            return 0

        @locked
        def rename(self, old, new):
            source, old_name = self._parent(old)
            target, new_name = self._parent(new)
            node = self._lookup(old)
            if new_name in target.entries:
                replaced = self.tree.nodes[target.entries[new_name]]
                if replaced.is_dir and (not node.is_dir or replaced.entries):
                    raise _errno(errno.EISDIR if not node.is_dir else errno.ENOTEMPTY)
                if node.is_dir and not replaced.is_dir:
                    raise _errno(errno.ENOTDIR)
            del source.entries[old_name]
            target.entries[new_name] = node.ino
            return 0

        def link(self, target, source):
            raise _errno(errno.EPERM)

        def symlink(self, target, source):
            raise _errno(errno.EPERM)

        @locked
        def fsyncdir(self, path, datasync, fh):
            self.tree.sync_entries(self._lookup(path))
            return 0

        # -- files
        @locked
        def create(self, path, mode, flags=0):
            parent, name = self._parent(path)
            if name in parent.entries:
                node = self.tree.nodes[parent.entries[name]]
                if flags & os.O_EXCL:
                    raise _errno(errno.EEXIST)
                return self._open(node, flags)
            node = self.tree.new_node(False, mode)
            parent.entries[name] = node.ino
            return self._handle(node)

        @locked
        def open(self, path, flags):
            return self._open(self._lookup(path), flags)

        def _open(self, node: Node, flags: int) -> int:
            access = flags & os.O_ACCMODE
            wanted = {os.O_RDONLY: 0o400, os.O_WRONLY: 0o200}.get(access, 0o600) | (0o200 if flags & os.O_TRUNC else 0)
            if node.mode & wanted != wanted:
                raise _errno(errno.EACCES)
            if flags & os.O_TRUNC:
                del node.data[:]
            return self._handle(node)

        @locked
        def read(self, path, size, offset, fh):
            return bytes(self._node(path, fh).data[offset:offset + size])

        @locked
        def write(self, path, data, offset, fh):
            node = self._node(path, fh)
            if offset > len(node.data):
                node.data.extend(bytes(offset - len(node.data)))
            node.data[offset:offset + len(data)] = data
            node.mtime_ns = time.time_ns()
            return len(data)

        @locked
        def truncate(self, path, length, fh=None):
            node = self._node(path, fh)
            if length < len(node.data):
                del node.data[length:]
            else:
                node.data.extend(bytes(length - len(node.data)))
            node.mtime_ns = time.time_ns()
            return 0

        @locked
        def fsync(self, path, datasync, fh):
            self.tree.sync_file(self._node(path, fh))
            return 0

        def flush(self, path, fh):
            return 0

        @locked
        def release(self, path, fh):
            self.handles.pop(fh, None)
            return 0

    class FUSE(mfusepy.FUSE):
        """mfusepy's FUSE, passing the file handle to ``truncate`` and refusing rename flags it would drop."""

        def truncate_fuse_3(self, path, length, fip):
            fh = fip.contents.fh if fip else None
            return self.operations.truncate(None if path is None else path.decode(), length, fh)

        def rename_fuse_3(self, old, new, flags):
            return -errno.EINVAL if flags else self.rename_fuse_2(old, new)

    return Operations, FUSE


def _serve_control(path: Path, operations) -> None:
    """Commands from the test, one per connection: ``cut [path ...]``, ``snapshot DEST``."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(os.fspath(path))
    server.listen()
    while True:
        connection, _ = server.accept()
        with connection, operations.mutex:  # no operation is half done, and none starts
            try:
                command, *args = connection.recv(65536).decode().split("\0")
                if command == "cut":
                    for kept in args:
                        folder, _, name = kept.rstrip("/").rpartition("/")
                        operations.tree.sync_entries(operations._lookup(folder), [name])
                    connection.sendall(b"ok")
                    os._exit(0)  # the power goes: what is pending in memory is gone
                if command == "snapshot":
                    shutil.copytree(operations.tree.backing, args[0])
                connection.sendall(b"ok")
            except Exception:
                traceback.print_exc()
                sys.stderr.flush()
                connection.sendall(b"error")


def serve(backing: str, mountpoint: str, control: str, read_only: bool = False) -> None:
    """Run the daemon in the foreground until unmounted or cut."""
    Operations, FUSE = _operations_class()
    control_path = Path(control)
    ready = control_path.with_suffix(".ready")
    operations = Operations(Tree(backing), ready)
    threading.Thread(target=_serve_control, args=(control_path, operations), daemon=True).start()
    FUSE(operations, mountpoint, foreground=True, use_ino=True, hard_remove=True, fsname="powercut", ro=read_only,
         attr_timeout=1.0, entry_timeout=1.0)


@functools.cache
def _libfuse3() -> str:
    found = ctypes.util.find_library("fuse3")
    if not found:
        raise RuntimeError("libfuse3 is missing: install Debian's fuse3 (scripts/test does)")
    return found


class PowercutFS:
    """The filesystem mounted at ``mountpoint`` over ``backing``, with its daemon in a child process."""

    def __init__(self, backing: str | os.PathLike, mountpoint: str | os.PathLike, read_only: bool = False):
        self.backing, self.mountpoint, self.read_only = Path(backing), Path(mountpoint), read_only
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.control = Path(tempfile.mkdtemp(prefix="powercut-")) / "control"  # short: a socket's path is 107 bytes at most
        self.process: subprocess.Popen | None = None

    def mount(self) -> PowercutFS:
        self.backing.mkdir(parents=True, exist_ok=True)
        ready = self.control.with_suffix(".ready")
        for leftover in (self.control, ready):
            leftover.unlink(missing_ok=True)
        command = [sys.executable, os.path.abspath(__file__), os.fspath(self.backing), os.fspath(self.mountpoint),
                   os.fspath(self.control)] + (["--ro"] if self.read_only else [])
        env = {**os.environ, "FUSE_LIBRARY_PATH": _libfuse3()}  # never libfuse 2, and no search at each start
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 30
        while not (ready.exists() and self.control.exists()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.power_cut(remount=False)
                raise RuntimeError(f"the power-cut filesystem did not mount: {self.log_tail()}")
            time.sleep(0.01)
        return self

    @property
    def log(self) -> Path:
        return self.control.with_name("log")

    def log_tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def _send(self, *words: str) -> None:
        try:
            with socket.socket(socket.AF_UNIX) as connection:
                connection.connect(os.fspath(self.control))
                connection.sendall("\0".join(words).encode())
                answer = connection.recv(16)
        except OSError as e:
            answer = str(e).encode()
        if answer != b"ok":
            raise RuntimeError(f"the power-cut filesystem did not do {words[0]} ({answer!r}): {self.log_tail()}")

    def snapshot(self, destination: str | os.PathLike) -> Path:
        """Copy the durable state as it is now (what a power cut now would leave) to ``destination``."""
        self._send("snapshot", os.fspath(destination))
        return Path(destination)

    def power_cut(self, keep: list[str] = (), remount: bool = True) -> None:
        """Drop everything not made durable, then mount the durable state afresh.

        Args:
            keep: paths, relative to the mount, whose pending entry (created, renamed over or
                unlinked) is made durable first, as a filesystem may persist one change early.
            remount: mount again (``False`` leaves it unmounted, for ``mount_elsewhere``).
        """
        if self.process is not None and self.process.poll() is None:
            try:
                self._send("cut", *keep)
            finally:
                if self.process.poll() is None and not keep:  # its control thread died: the cut is the same
                    self.process.kill()
                self.process.wait(timeout=30)
        self.process = None
        subprocess.run(["fusermount3", "-u", "-z", os.fspath(self.mountpoint)], capture_output=True, check=False)
        if remount:
            self.mount()

    def replace_backing(self, backing: str | os.PathLike, read_only: bool | None = None) -> PowercutFS:
        """A power cut, then a mount of another durable state (a snapshot), at the same mount point."""
        self.power_cut(remount=False)
        self.backing = Path(backing)
        if read_only is not None:
            self.read_only = read_only
        return self.mount()

    def unmount(self) -> None:
        self.power_cut(remount=False)
        shutil.rmtree(self.control.parent, ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], sys.argv[3], read_only="--ro" in sys.argv[4:])
