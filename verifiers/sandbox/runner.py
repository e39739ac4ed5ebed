"""The process inside a sandbox. It confines itself, then plays one of three roles.

`verifiers.sandbox.process` starts this file's text as `python -I -S -B -c <text> <config fd>` inside
bubblewrap, so nothing from the server's environment, site-packages or working directory is imported. Before
anything it is handed runs, it sets its rlimits and installs the seccomp filter it was given (a compiled BPF
program on a file descriptor): from then on the kernel refuses new processes, programs, sockets, mounts,
namespaces and tracing, whatever the code that follows does to this interpreter.

- program: run the source as `__main__`; its output is the result (program-aided answers, plain runs).
- candidate: load the model's program, then answer calls over a pipe: a call's arguments and its return value
  travel as plain data (`encode` / `decode`), never as objects, so nothing the program defines can reach the
  process that judges it.
- harness: run the tests (the API caller's, or the prompt's examples) against proxies that forward each call to
  the candidate, and write one verdict per test to a pipe only the server reads.

This file is stdlib-only and imports nothing of Ponder's: it runs under whatever Python the sandbox binds in.
"""

from __future__ import annotations

import builtins
import ctypes
import json
import math
import os
import resource
import sys
from collections.abc import Callable
from typing import Any

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
MAX_MESSAGE = 1 << 20  # one call or reply, encoded; more is an error, not a larger buffer
MAX_DEPTH = 100  # nesting of one plain value
# Exceptions a candidate may raise across the channel by name: a test that expects `ValueError` sees one. Not the
# ones that steer iteration: a StopIteration out of `map(candidate, xs)` would end the harness's loop early.
STEERING = (StopIteration, StopAsyncIteration)
RAISABLE = {
    name: value for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, Exception) and not issubclass(value, STEERING)
}


class NotPlain(TypeError):
    """A value that is not plain data: it cannot cross between the candidate and the harness."""


class CandidateError(Exception):
    """The candidate raised an exception that is not a builtin one."""


class CandidateGone(RuntimeError):
    """The candidate ended (os._exit, a crash, a limit) or broke the channel's protocol."""


def confine(config: dict[str, Any]) -> None:
    """Rlimits first (the filter would allow setrlimit, but only downwards), then the seccomp filter."""
    cpu = math.ceil(config["cpu_s"])
    limits = {
        resource.RLIMIT_CPU: (cpu, cpu + 1),  # SIGXCPU first, SIGKILL a second later
        resource.RLIMIT_AS: (config["memory_mb"] << 20,) * 2,
        resource.RLIMIT_FSIZE: (config["file_mb"] << 20,) * 2,
        resource.RLIMIT_NPROC: (config["processes"],) * 2,
        resource.RLIMIT_NOFILE: (config["open_files"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, (soft, hard) in limits.items():
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))
    if config["seccomp_fd"] is not None:
        install_filter(config["seccomp_fd"])


def install_filter(fd: int) -> None:
    with os.fdopen(fd, "rb") as handle:
        program = handle.read()

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"sandbox: cannot install the seccomp filter: {os.strerror(errno)}")


def encode(value: Any, depth: int = 0) -> Any:
    """Plain data as JSON; a tuple, set, dict, bytes or non-finite float as a one-key tagged object.

    Exact types only: a subclass of int or str could answer `==` as it likes.
    """
    if depth > MAX_DEPTH:
        raise NotPlain("nested too deeply")
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return value
    if kind is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if kind is list:
        return [encode(item, depth + 1) for item in value]
    if kind in (tuple, set, frozenset):
        return {kind.__name__: [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is bytes:
        return {"bytes": value.hex()}
    if kind is complex:
        return {"complex": [encode(value.real), encode(value.imag)]}
    raise NotPlain(f"a {kind.__name__} is not plain data")


def decode(data: Any, depth: int = 0) -> Any:
    """The inverse of `encode`, refusing anything `encode` would not have written."""
    if depth > MAX_DEPTH:
        raise NotPlain("nested too deeply")
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [decode(item, depth + 1) for item in data]
    if kind is not dict or len(data) != 1:
        raise NotPlain("not an encoded value")
    ((tag, body),) = data.items()
    if tag == "float" and body in ("nan", "inf", "-inf"):
        return float(body)
    if tag == "bytes" and type(body) is str:
        return bytes.fromhex(body)
    if type(body) is not list:
        raise NotPlain("not an encoded value")
    try:  # an unhashable key or member, or a complex number out of range, is no plain value either
        if tag == "dict" and all(type(pair) is list and len(pair) == 2 for pair in body):
            return {decode(key, depth + 1): decode(value, depth + 1) for key, value in body}
        items = [decode(item, depth + 1) for item in body]
        if tag == "complex" and len(items) == 2 and all(type(part) in (int, float) for part in items):
            return complex(*items)
        if tag == "tuple":
            return tuple(items)
        if tag in ("set", "frozenset"):
            return (set if tag == "set" else frozenset)(items)
    except (TypeError, OverflowError) as error:
        raise NotPlain(str(error)) from None
    raise NotPlain("not an encoded value")


class Channel:
    """Newline-delimited JSON over two pipes, each message bounded."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._reader = os.fdopen(read_fd, "rb")
        self._write_fd = write_fd

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(self._write_fd, view) :]

    def receive(self) -> dict[str, Any] | None:
        line = self._reader.readline(MAX_MESSAGE + 1)
        if not line:
            return None
        if len(line) > MAX_MESSAGE or not line.endswith(b"\n"):
            raise CandidateGone("a message over the size limit")
        message = json.loads(line)
        if type(message) is not dict:
            raise CandidateGone("a message that is not an object")
        return message


def run_program(config: dict[str, Any]) -> None:
    source = _read_fd(config["program_fd"])
    module = type(sys)("__main__")
    sys.modules["__main__"] = module
    sys.argv = ["<program>"]
    exec(compile(source, "<program>", "exec"), module.__dict__)  # noqa: S102  (running it is the point)


def _read_fd(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def serve_candidate(config: dict[str, Any]) -> None:
    """Load the program, tell the harness what it defines, then answer its calls until it closes the pipe."""
    channel = Channel(config["calls_fd"], config["replies_fd"])
    namespace: dict[str, Any] = {"__name__": "__candidate__"}
    try:
        exec(compile(_read_fd(config["program_fd"]), "<program>", "exec"), namespace)  # noqa: S102
    except BaseException as error:  # SystemExit too: a program that exits while loading has failed to load
        channel.send({"loaded": False, "error": f"{type(error).__name__}: {error}"[:500]})
        raise SystemExit(1) from None
    functions = [name for name, value in namespace.items() if not name.startswith("__") and callable(value)]
    values = {}
    for name, value in namespace.items():
        if not name.startswith("__") and not callable(value):
            try:
                values[name] = encode(value)
            except (NotPlain, RecursionError):
                continue
    channel.send({"loaded": True, "functions": functions, "values": values})
    while (call := channel.receive()) is not None:
        try:
            function = namespace[call["function"]]
            result = function(*decode(call["args"]), **decode(call["kwargs"]))
            reply = {"id": call["id"], "value": encode(result)}
        except BaseException as error:  # noqa: BLE001  (SystemExit and KeyboardInterrupt are answers too)
            reply = {"id": call["id"], "raised": type(error).__name__, "message": str(error)[:500]}
        channel.send(reply)


class Candidate:
    """The harness's side of the channel: each call a message out and a reply back, in order."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._calls = 0
        self.gone: str | None = None

    def call(self, function: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.gone is not None:
            raise CandidateGone(self.gone)
        self._calls += 1
        self._channel.send({"id": self._calls, "function": function, "args": encode(list(args)), "kwargs": encode(kwargs)})
        try:
            reply = self._channel.receive()
        except (ValueError, CandidateGone) as error:
            reply, self.gone = None, f"the candidate broke the protocol: {error}"
        if reply is None or reply.get("id") != self._calls:
            self.gone = self.gone or "the candidate ended"
            raise CandidateGone(self.gone)
        if "raised" in reply:
            error_class = RAISABLE.get(reply["raised"], CandidateError)
            raise error_class(str(reply.get("message", "")))
        return decode(reply["value"])

    def proxy(self, name: str) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            return self.call(name, args, kwargs)

        forward.__name__ = forward.__qualname__ = name
        return forward


def run_harness(config: dict[str, Any]) -> None:
    """One verdict line per test, "<index> pass|fail", written as each test ends.

    The tests run even when the program did not load, against none of its names: a test that uses the program
    then fails, and what a caller's test does never depends on what the model wrote.
    """
    verdicts = config["verdicts_fd"]
    channel = Channel(config["replies_fd"], config["calls_fd"])
    try:
        loaded = channel.receive()
    except (ValueError, CandidateGone):
        loaded = None
    entry_point = config["entry_point"]
    namespace: dict[str, Any] = {"__name__": "__harness__"}
    if loaded and loaded.get("loaded") is True:
        candidate = Candidate(channel)
        # A program's `abs` or `isinstance` must not stand in for the builtin the tests mean: only the entry point
        # may carry a builtin's name.
        exposed = {str(name) for name in [*loaded.get("values", {}), *loaded.get("functions", [])]}
        exposed = {name for name in exposed if name == entry_point or not hasattr(builtins, name)}
        for name, value in dict(loaded.get("values", {})).items():
            if name in exposed:
                try:
                    namespace[name] = decode(value)
                except (NotPlain, RecursionError):
                    continue
        namespace.update({name: candidate.proxy(name) for name in loaded.get("functions", []) if name in exposed})
    for index, test in enumerate(config["tests"]):
        scope = dict(namespace)
        try:
            exec(compile(test, f"<test {index}>", "exec"), scope)  # noqa: S102
            check = scope.get("check")
            if entry_point is not None and callable(check) and check is not namespace.get("check"):
                check(namespace[entry_point])
            outcome = "pass"
        except BaseException:  # noqa: BLE001  (a test that exits has not passed)
            outcome = "fail"
        os.write(verdicts, f"{index} {outcome}\n".encode())


if __name__ == "__main__":
    CONFIG = json.loads(_read_fd(int(sys.argv[1])))
    confine(CONFIG)
    {"program": run_program, "candidate": serve_candidate, "harness": run_harness}[CONFIG["role"]](CONFIG)
