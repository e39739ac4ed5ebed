"""Start a command as a container runtime starts the gateway: the deployment's seccomp profile applied, only the
capabilities Docker grants by default (no CAP_SYS_ADMIN), and the cgroup filesystem read-only. The tests run the
gateway this way to check the sandbox's container mode on a machine without a container engine.

    python -m tests.contained PROFILE -- COMMAND...   (as root; run inside a mount namespace of its own)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyseccomp as seccomp

DOCKER_CAPABILITIES = (
    "chown",
    "dac_override",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "net_bind_service",
    "net_raw",
    "sys_chroot",
    "mknod",
    "audit_write",
    "setfcap",
)


def profile_filter(path: str) -> seccomp.SyscallFilter:
    """A Docker/OCI seccomp profile (defaultAction, and syscalls by name with an action and errno) as a filter."""
    with open(path) as handle:
        profile = json.load(handle)

    def action(name: str, errno: int = 1) -> int:
        return {"SCMP_ACT_ALLOW": seccomp.ALLOW, "SCMP_ACT_ERRNO": seccomp.ERRNO(errno), "SCMP_ACT_KILL": seccomp.KILL}[name]

    rules = seccomp.SyscallFilter(defaction=action(profile["defaultAction"], profile.get("defaultErrnoRet", 1)))
    for group in profile["syscalls"]:
        for name in group["names"]:
            rules.add_rule(action(group["action"], group.get("errnoRet", 1)), name)
    return rules


def read_only_cgroups() -> None:
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[2] in ("cgroup", "cgroup2")]
    for point in points:
        subprocess.run(["mount", "-o", "remount,bind,ro", point], check=True)


def main() -> None:
    profile, separator, *command = sys.argv[1:]
    assert separator == "--" and command, __doc__
    read_only_cgroups()
    profile_filter(profile).load()
    bounding = ",".join(["-all", *(f"+{cap}" for cap in DOCKER_CAPABILITIES)])
    os.execvp("setpriv", ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--", *command])


if __name__ == "__main__":
    main()
