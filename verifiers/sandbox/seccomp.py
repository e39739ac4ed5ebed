"""The seccomp filter every sandboxed process installs before it runs anything it was handed.

Built with libseccomp (through pyseccomp) in the server, exported as a BPF program, and loaded by the runner
inside the sandbox: libseccomp resolves the syscall numbers of this machine's architecture and kills a process
that calls through another ABI (x32, i386), which a hand-written filter would have to get right itself.

Default allow with a deny list, as container runtimes' profiles are in spirit: a candidate is ordinary Python
(arithmetic, strings, threads at most), so what it never needs is refused with EPERM: new processes and
programs, sockets, mounts and namespaces, tracing and other processes' memory, the kernel's keyrings, BPF,
io_uring (whose operations bypass seccomp), module loading, clocks, and file handles by number.
"""

from __future__ import annotations

import errno
import functools
import tempfile

import pyseccomp as seccomp

CLONE_THREAD = 0x00010000
CLONE_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)
DENIED = (
    "execve",
    "execveat",
    "fork",
    "vfork",
    "socket",
    "socketpair",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_open",
    "pidfd_getfd",
    "pidfd_send_signal",
    "process_madvise",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "fanotify_init",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
    "vhangup",
    "sethostname",
    "setdomainname",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "mknod",
    "mknodat",
    "name_to_handle_at",
    "open_by_handle_at",
    "ioperm",
    "iopl",
)


@functools.cache
def filter_program() -> bytes:
    """The filter as BPF, built once per process."""
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED:
        rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
    # clone makes threads (CLONE_THREAD) and processes; only threads, and never into new namespaces
    rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    for flag in CLONE_NAMESPACES:
        rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes the C library fall back to clone
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as exported:
        rules.export_bpf(exported)
        exported.seek(0)
        return exported.read()
