"""The sandbox's settings, nested into the service's as PONDER_SANDBOX__*."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class SandboxLimits(BaseModel):
    cpu_s: float = Field(5, gt=0, description="RLIMIT_CPU of each sandboxed process (rounded up to whole seconds)")
    wall_s: float = Field(10, gt=0, description="wall-clock limit of a run; everything the run started is killed after it")
    memory_mb: int = Field(512, ge=64, description="RLIMIT_AS of each sandboxed process")
    file_mb: int = Field(1, ge=1, description="RLIMIT_FSIZE: the largest file a program may write")
    disk_mb: int = Field(8, ge=1, description="all files a program may write: the size of its /tmp, the only writable place")
    processes: int = Field(16, ge=2, description="threads per sandboxed process (cgroup pids.max where available, else RLIMIT_NPROC)")
    open_files: int = Field(64, ge=16, description="RLIMIT_NOFILE of each sandboxed process")
    output_kb: int = Field(64, ge=1, description="stdout and stderr kept, each; more kills the program")
    concurrency: int = Field(2, ge=1, description="runs at once per Sandbox (a test run is two processes)")
    uid_base: int = Field(61000, ge=1000, description="a root server runs sandboxed processes as host uids from here (two per concurrent run), never as root")
    python: Path | None = Field(None, description="the interpreter bound into the sandbox (default: the server's own); only its standard library is used")
    allow_unisolated: bool = Field(
        False,
        description="development only: where bubblewrap's namespaces are unavailable, run code with seccomp and rlimits alone instead of refusing",
    )
