"""The process inside the sandbox: confine itself, then run the program it is handed on a file descriptor.

`verifiers.code` starts this file's text as `python -I -S -B -c <text> <json config>`, so nothing from the
server's environment, site-packages or working directory is imported. It runs in two stages, one interpreter
each, so that the program never shares an interpreter with ctypes:

- setup: kernel-level confinement that needs ctypes or privileges the program must not keep: the read-only
  filesystem and a small tmpfs as working directory (inside fresh namespaces), no_new_privs, rlimits. As PID 1 of
  a fresh PID namespace it then forks, because PID 1 ignores the signals the rlimits send (SIGXCPU); it waits
  and exits 128+N when the program dies of signal N.
- program: Python-level confinement (an audit hook; stand-ins for dangerous calls that raise no audit event),
  then the program itself, as `__main__`.

The audit hook is defence in depth, not a boundary: CPython documents that hooks can be bypassed. It refuses
what a test program has no business doing (processes, signals, sockets, ctypes, writes outside the working
directory, reads outside it and the standard library) so that the plain ways of doing harm fail the same way
whether or not the machine allows namespaces.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
from collections.abc import Callable
from typing import Any

# Calls that do harm without raising an audit event (make device files, signal or slow down other processes,
# start processes); replaced in their modules before the program runs.
_OS_CALLS = ("mknod", "mkfifo", "pidfd_open", "setpriority", "sched_setaffinity", "sched_setparam",
             "sched_setscheduler")
UNAUDITED = {"posix": _OS_CALLS, "os": _OS_CALLS, "_signal": ("pidfd_send_signal",),
             "_posixsubprocess": ("fork_exec",)}
# Importing these is refused: they reach native code, other interpreters, or files (from C, with no "open"
# event) around the hook.
DENIED_MODULES = frozenset({"ctypes", "_ctypes", "_xxsubinterpreters", "_posixshmem", "_gdbm", "_dbm", "readline",
                            "spwd"})
DENIED_EVENTS = frozenset({
    "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen",
    "os.kill", "os.killpg", "os.mkdir", "os.rmdir", "os.symlink", "os.link", "os.chown", "os.chdir",
    "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr", "resource.setrlimit", "resource.prlimit",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "cpython.PyInterpreterState_New",
})
DENIED_PREFIXES = ("socket.", "ctypes.", "fcntl.", "sqlite3.", "syslog.")
# Events that change a file by name: (leading path arguments, trailing dir_fd arguments).
MUTATIONS = {"os.remove": (1, 1), "os.rename": (2, 2), "os.chmod": (1, 1), "os.utime": (1, 1),
             "os.truncate": (1, 0)}
DEVICES = frozenset({"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/stdin", "/dev/stdout",
                     "/dev/stderr"})
WRITABLE_DEVICES = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})

PR_SET_NO_NEW_PRIVS = 38
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (added after the syscall tables were unified)
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8


def setup(config: dict[str, Any]) -> None:
    """Stage one: confine the process at the kernel level, then become (or fork) the program stage."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int) -> None:
        if result != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    if config["contain"]:
        # Recursive read-only first, then the tmpfs on top: a write can land nowhere else, however it is made,
        # and the tmpfs bounds the total written (RLIMIT_FSIZE bounds one file only).
        attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY, 0, 0, 0)
        check(libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), b"/",
                           ctypes.c_uint(AT_RECURSIVE), attr, ctypes.c_size_t(ctypes.sizeof(attr))))
        workdir = os.getcwd()
        options = f"size={config['disk_mb']}m,mode=0700".encode()
        check(libc.mount(b"tmpfs", workdir.encode(), b"tmpfs", ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC),
                         options))
        os.chdir(workdir)  # enter the tmpfs, not the directory beneath it
    check(libc.prctl(*map(ctypes.c_ulong, (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))))
    set_limits(config)

    argv = [*sys.orig_argv[:-1], json.dumps({**config, "stage": "program"})]
    if os.getpid() != 1:
        os.execv(sys.executable, argv)
    child = os.fork()
    if child == 0:
        os.execv(sys.executable, argv)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def set_limits(config: dict[str, Any]) -> None:
    """Rlimits, never above the hard limits this process was started with.

    Set after the namespaces exist, so that inside a user namespace RLIMIT_NPROC counts this sandbox's
    processes only. Root is exempt from RLIMIT_NPROC: hence running as nobody where possible, and the hook's
    refusal of fork. RLIMIT_CPU's hard limit is a second above the soft one: SIGXCPU first, SIGKILL if ignored.
    """
    cpu = math.ceil(config["cpu_s"])
    limits = {
        resource.RLIMIT_CPU: (cpu, cpu + 1),
        resource.RLIMIT_AS: (config["memory_mb"] << 20,) * 2,
        resource.RLIMIT_FSIZE: (config["file_mb"] << 20,) * 2,
        resource.RLIMIT_NPROC: (config["processes"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, (soft, hard) in limits.items():
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))


def refused(*args: object, **kwargs: object) -> None:
    raise PermissionError("sandbox: not allowed")


def replace_unaudited() -> None:
    """Replace calls that act on other processes or make device files without raising an audit event.

    Replaced, not removed, so that modules importing them by name (subprocess, asyncio) still import. Every
    builtin module is imported first and `_imp.create_builtin` removed after, so a program cannot get a fresh,
    whole copy of `posix` or `_signal`; re-importing a module named here (after removing it from sys.modules)
    raises an "import" event the hook refuses.
    """
    import _imp

    for module in (*sys.builtin_module_names, *UNAUDITED):
        if module not in DENIED_MODULES:
            __import__(module)
    for module, names in UNAUDITED.items():
        for name in names:
            if hasattr(sys.modules[module], name):
                setattr(sys.modules[module], name, refused)
    del _imp.create_builtin


def make_guard(workdir: str, read_roots: tuple[str, ...], max_files: int) -> Callable[[str, tuple], None]:
    """The audit hook. Everything it uses is bound here, as immutable values or builtin functions.

    A program can reach the hook's frame (and so these values) through a traceback, and can rebind any global
    or builtin name, so the hook looks up no global or builtin name at call time and calls no Python-level
    function: string rules on the path as given instead of os.path.realpath. Paths with ".." are refused, the
    working directory cannot be changed, and symlinks, hard links and directories cannot be made, so a name
    under the working directory stays there. Path-like objects are refused: their __fspath__ could answer the
    hook differently from the call.
    """
    deny, unavailable, str_, bytes_, int_, type_, len_ = PermissionError, ImportError, str, bytes, int, type, len
    listdir = os.listdir
    prefix = workdir + "/"
    library = tuple(root + "/" for root in read_roots)
    readable = (prefix, *library)
    exact = frozenset({workdir, *read_roots, *DEVICES})
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    tmpfile = os.O_TMPFILE  # an unnamed file in the directory: it would escape the file count
    denied_events, denied_prefixes = DENIED_EVENTS, DENIED_PREFIXES
    denied_modules = DENIED_MODULES | frozenset(UNAUDITED)
    mutations, writable_devices = MUTATIONS, WRITABLE_DEVICES

    def guard(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if type_(path) is int_:
                return  # an open file descriptor: it was checked when it was opened
            if type_(path) is bytes_:
                path = path.decode("utf-8", "surrogateescape")
            if type_(path) is not str_ or ".." in path.split("/"):
                raise deny(f"sandbox: cannot open {path!r}")
            if not flags & write_flags:
                if path.startswith("/") and path not in exact and not path.startswith(readable):
                    raise deny(f"sandbox: cannot read {path!r}")
                return
            if path in writable_devices or (path == workdir and flags & tmpfile != tmpfile):
                return  # the directory itself: EISDIR, or io.open with an opener whose os.open is checked
            absolute = path.startswith(prefix)
            name = path[len_(prefix):] if absolute else path
            # os.open (mode None) may resolve a relative path against any dir_fd, which the event does not show
            if "/" in name or name in ("", ".") or (mode is None and not absolute):
                raise deny(f"sandbox: cannot write {path!r} (only files directly in the working directory)")
            present = listdir(workdir)
            if name not in present and len_(present) >= max_files:
                raise deny(f"sandbox: at most {max_files} files in the working directory")
        elif event in mutations:
            paths, dir_fds = mutations[event]
            for fd in args[len_(args) - dir_fds:]:
                if fd is not None and fd != -1:
                    raise deny(f"sandbox: {event} relative to a directory descriptor")
            for path in args[:paths]:
                if type_(path) is int_ and event == "os.truncate":
                    continue
                if type_(path) is bytes_:
                    path = path.decode("utf-8", "surrogateescape")
                if type_(path) is not str_:
                    raise deny(f"sandbox: {event} on {path!r}")
                name = path[len_(prefix):] if path.startswith(prefix) else path
                if "/" in name or name in ("", ".", ".."):
                    raise deny(f"sandbox: {event} outside the working directory")
        elif event == "import":
            name, filename = args[0], args[1]
            if name in denied_modules:  # ImportError: code that can do without the module (pdb, readline) does
                raise unavailable(f"sandbox: cannot import {name}", name=name)
            if filename is not None and (type_(filename) is not str_ or ".." in filename.split("/")
                                         or not filename.startswith(library)):
                raise deny(f"sandbox: cannot load native code from {filename!r}")
        elif event in denied_events or event.startswith(denied_prefixes):
            raise deny(f"sandbox: {event} is not allowed")

    return guard


def run_program(config: dict[str, Any]) -> None:
    """Stage two: confine the interpreter, then run the program as __main__ in a fresh module."""
    with os.fdopen(config["program_fd"], "rb") as handle:
        source = handle.read()
    workdir = os.getcwd()
    replace_unaudited()
    sys.addaudithook(make_guard(workdir, tuple(sys.path), max(1, config["disk_mb"] // config["file_mb"])))
    module = type(sys)("__main__")
    sys.modules["__main__"] = module
    sys.argv = ["<program>"]
    exec(compile(source, "<program>", "exec"), module.__dict__)  # noqa: S102  (running it is the point)


if __name__ == "__main__":
    CONFIG = json.loads(sys.argv[1])
    if CONFIG["stage"] == "setup":
        setup(CONFIG)
    else:
        run_program(CONFIG)
