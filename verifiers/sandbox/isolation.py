"""How a sandboxed process is started on this machine: bubblewrap's namespaces, a host uid that is not root, a
cgroup that caps its threads, and the seccomp filter the runner installs. Found once per server process by
starting a trivial program each way, strongest first.

Two ways to launch, by what the server may do:

- `bwrap`: a root server with CAP_SYS_ADMIN (a host, a VM, a privileged pod). bubblewrap makes the mount, PID,
  network, IPC, UTS and cgroup namespaces with the server's privileges, then `setpriv` inside them drops to a
  host uid of the sandbox's own with no capabilities. So the interpreter may live anywhere root can read, and
  the program is not root anywhere.
- `bwrap-userns`: a server without CAP_SYS_ADMIN (a container, a user's laptop). bubblewrap makes a user
  namespace too; a root server first drops to the sandbox's uid, so that the uid outside is never root
  (root outside is exempt from RLIMIT_NPROC). The interpreter must then be readable by that uid.

Either way the program sees a root of its own: /usr, the interpreter's prefix, /dev's harmless devices and a
small /tmp, all read-only but /tmp; no /proc, no /sys, no /etc, no host socket. Where neither way works the
sandbox refuses to run code (`SandboxUnavailable`), unless the settings allow the unisolated mode, which keeps
only seccomp and rlimits, for development.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

BWRAP = shutil.which("bwrap")
SETPRIV = shutil.which("setpriv")
CAP_SYS_ADMIN = 21
SANDBOX_UID = 65534  # the uid a program sees inside a user namespace
Launch = Literal["bwrap", "bwrap-userns", "unisolated"]
NAMESPACES = ("--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try")
TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
REMOVE_S = 5.0
log = logging.getLogger("ponder.sandbox")


class SandboxUnavailable(RuntimeError):
    """This machine cannot isolate code, and the settings do not allow running it unisolated."""


def _has_cap(capability: int) -> bool:
    with open("/proc/self/status") as status:
        effective = next(line for line in status if line.startswith("CapEff:"))
    return bool(int(effective.split()[1], 16) >> capability & 1)


def interpreter(python: Path | None) -> tuple[str, str]:
    """The interpreter's real path and the prefix holding it and its standard library."""
    if python is None:
        return os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix)
    executable = os.path.realpath(python)
    return executable, str(Path(executable).parent.parent)


class PidsCgroup:
    """A cgroup per sandboxed process with `pids.max`: a thread cap that binds whatever the uid. Only where the
    server may make cgroups (v1's pids hierarchy, or v2 with the pids controller on)."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent

    @staticmethod
    def find() -> PidsCgroup | None:
        for root, relative in _own_cgroups():
            candidate = PidsCgroup(root / relative.lstrip("/"))
            try:
                candidate.remove_now(candidate.create(4))
                return candidate
            except OSError:
                continue
        return None

    def create(self, pids_max: int) -> Path:
        path = self.parent / f"ponder-sandbox-{os.getpid()}-{secrets.token_hex(6)}"
        path.mkdir()
        try:
            (path / "pids.max").write_text(str(pids_max))
        except OSError:
            path.rmdir()
            raise
        return path

    @staticmethod
    def emptied(path: Path) -> bool:
        """Kill whatever is left in the cgroup and try to remove it: a killed task leaves its cgroup only once it
        has been reaped, which for a sandbox's inner processes happens a moment after the run ends."""
        for pid in _read(path / "cgroup.procs").split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        try:
            path.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True

    def remove_now(self, path: Path) -> None:
        deadline = time.monotonic() + REMOVE_S
        while not self.emptied(path) and time.monotonic() < deadline:
            time.sleep(0.01)

    async def remove(self, path: Path) -> None:
        deadline = time.monotonic() + REMOVE_S
        while not self.emptied(path):
            if time.monotonic() > deadline:
                log.warning("sandbox: cgroup %s still busy %.0f s after its run; left in place", path, REMOVE_S)
                return
            await asyncio.sleep(0.01)


def _own_cgroups() -> Iterator[tuple[Path, str]]:
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as lines:
        for line in lines:
            _, controllers, relative = line.rstrip("\n").split(":", 2)
            if "pids" in controllers.split(","):
                yield Path("/sys/fs/cgroup/pids"), relative
            elif controllers == "" and "pids" in _read(Path("/sys/fs/cgroup") / relative.lstrip("/") / "cgroup.controllers"):
                yield Path("/sys/fs/cgroup"), relative


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@dataclass(frozen=True)
class Isolation:
    """How processes are launched here, and which layers that gives them."""

    launch: Launch
    python: str
    prefix: str
    cgroup: PidsCgroup | None = field(default=None, compare=False)
    problems: tuple[str, ...] = ()  # why the stronger launches failed

    @property
    def layers(self) -> list[str]:
        if self.launch == "unisolated":
            return ["seccomp", "rlimits"]
        return [
            "bubblewrap",
            *(["userns"] if self.launch == "bwrap-userns" else []),
            "mount+pid+net+ipc+uts namespaces",
            "private read-only root",
            "tmpfs /tmp",
            "non-root uid",
            "no capabilities",
            "no_new_privs",
            "seccomp",
            "cgroup pids.max" if self.cgroup else "RLIMIT_NPROC",
            "rlimits",
        ]

    def describe(self) -> str:
        return f"{self.launch}: " + ", ".join(self.layers)

    def argv(self, command: list[str], uid: int, disk_mb: int) -> list[str]:
        """The command, as launched in a sandbox of its own running as host uid `uid`."""
        if self.launch == "unisolated":
            return command
        mounts = [
            "--die-with-parent",
            "--new-session",
            *NAMESPACES,
            "--ro-bind",
            "/usr",
            "/usr",
            *_top_level(),
            *([] if self.prefix.startswith("/usr/") or self.prefix == "/usr" else [*_reachable(self.prefix), "--ro-bind", self.prefix, self.prefix]),
            "--dev",
            "/dev",
            "--tmpfs",
            "/dev/shm",
            "--remount-ro",
            "/dev/shm",
            "--remount-ro",
            "/dev",
            "--size",
            str(disk_mb << 20),
            "--perms",
            "1777",
            "--tmpfs",
            "/tmp",
            "--dir",
            "/var",
            "--tmpfs",
            "/run",
            "--remount-ro",
            "/run",
            "--symlink",
            "../run",
            "/var/run",
            "--chdir",
            "/tmp",
            "--remount-ro",
            "/",
        ]
        assert BWRAP is not None, "a bubblewrap launch was detected without bubblewrap"
        userns = [BWRAP, "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL", *mounts, "--", *command]
        if self.launch == "bwrap-userns" and os.geteuid() != 0:
            return userns
        assert SETPRIV is not None, "a root server's launch was detected without setpriv"
        drop = [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
        if self.launch == "bwrap":
            return [BWRAP, *mounts, "--", *drop, *command]
        return [*drop, *userns]


def _reachable(path: str) -> list[str]:
    """The directories above `path`, made traversable: bubblewrap copies their modes, and a prefix under a home
    of mode 0700 (pyenv's under /root) would leave the sandbox's uid unable to load the interpreter's library."""
    args: list[str] = []
    for parent in reversed(Path(path).parents[:-1]):
        args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _top_level() -> list[str]:
    """/bin, /lib and the like: symlinks into /usr on a merged-/usr system, bound read-only otherwise."""
    args: list[str] = []
    for path in TOP_LEVEL:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _launches(allow_unisolated: bool) -> list[Launch]:
    launches: list[Launch] = []
    if BWRAP and SETPRIV and os.geteuid() == 0 and _has_cap(CAP_SYS_ADMIN):
        launches.append("bwrap")
    if BWRAP and (SETPRIV or os.geteuid() != 0):
        launches.append("bwrap-userns")
    if allow_unisolated:
        launches.append("unisolated")
    return launches


Probe = Callable[[Isolation, int], "str | None"]


@functools.cache
def detect(python: Path | None, uid: int, allow_unisolated: bool, probe: Probe) -> Isolation:
    """The strongest launch under which `probe` (a trivial program, run the real way) works here."""
    executable, prefix = interpreter(python)
    cgroup = PidsCgroup.find()
    problems: list[str] = [] if BWRAP else ["bubblewrap (bwrap) is not installed"]
    for launch in _launches(allow_unisolated):
        isolation = Isolation(launch, executable, prefix, cgroup if launch != "unisolated" else None, tuple(problems))
        try:
            problem = probe(isolation, uid)
        except (OSError, subprocess.SubprocessError) as error:
            problem = str(error)
        if problem is None:
            return isolation
        problems.append(f"{launch}: {problem}")
    raise SandboxUnavailable(
        "sandbox: this machine cannot isolate code (" + "; ".join(problems) + "). Install bubblewrap and allow user "
        "namespaces (docs/sandbox.md), or set PONDER_SANDBOX__ALLOW_UNISOLATED=true for development only."
    )
