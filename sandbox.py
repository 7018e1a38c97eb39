"""Run untrusted programs (a model's code plus the task's tests) in separate, limited processes (Linux).

    run(program, timeout=10.0) -> "correct" | "failed" | "error" | "timeout"
    run_many(programs, timeout=10.0, workers=None) -> those, in order; a None program is "no_code", not run
    isolation() -> "network namespace" | "sockets blocked": the network isolation a program gets here

Each program runs in a fresh ``python -I -S`` (this file as a script; no site-packages), spawned, never forked from
the caller (a torch process with threads), in a new session, with: a new temporary directory as its working
directory, deleted after; an empty environment; stdin at end of file once the harness read the program; stdout and
stderr on /dev/null (100 MB of output fills nothing); the limits below and ceil(timeout) + 1 CPU seconds. The harness
forks: one half runs the program, the other kills it at ``timeout`` (wall clock) and reaps it; the grader kills the
process group after it, or at timeout + GRACE. Where the system allows it (root, or a user namespace), new network,
PID and mount namespaces: no network, every process the program starts dies with it (setsid or not), each SCRATCH
place is a private 16 MiB tmpfs; else an audit hook (PEP 578) refuses sockets, ctypes and starting programs. As root
the program runs as nobody (65534) with no capability but CAP_DAC_READ_SEARCH, kept only when nobody cannot read
Python's own library (under /root): RLIMIT_NPROC holds and it writes only where anyone may.

A pass is the run's sentinel (16 random bytes) coming back over a private file: the harness reads it with the program
from stdin (not argv, env or a file) and writes it only once the program's code returned, so exit(0), os._exit(0),
sys.exit(0), a patched sys.exit or a printed lookalike is no pass. "failed": the real AssertionError escaped;
"error": another exception, a syntax error, a kill (CPU, memory, a signal), an exit before the end.

Not a container. It does not stop: a program that digs the sentinel out of its own process (the harness's frame, gc,
/proc/self/mem) and writes it to the channel; reading what its uid can read (as root with the capability: every file,
not other processes' memory or environment); writing world-writable places but SCRATCH (FILE_SIZE a file, no quota),
SCRATCH too without namespaces; Unix sockets in the file system; programs graded together slowing each other or using
up their shared process limit, or, without namespaces, touching each other's files and processes (one uid); kernel
exploits. The audit hook is best effort (_posixsubprocess gets past it). Without namespaces and not root, a program
has the user's rights (it can delete the user's files) and can leave processes behind.
"""
import builtins
import ctypes
import math
import os
import resource
import select
import sys

if __name__ != "__main__":  # the grading side's modules: the child runs this file as a script and must start fast
    import contextlib
    import signal
    import tempfile
    from concurrent.futures import ThreadPoolExecutor
    from subprocess import DEVNULL, PIPE, Popen

MEMORY = 1 << 30  # bytes of address space
FILE_SIZE = 16 << 20  # bytes per file written
FILES = 64  # open file descriptors
PROCESSES = 64 + os.cpu_count()  # RLIMIT_NPROC counts per uid: a harness per core (the pool), 64 more
NOBODY = 65534
GRACE = 1.0  # seconds the grader waits past the timeout for the harness to stop the program itself
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # where anyone may write: with namespaces, private
_NEWNET, _NEWPID, _NEWUSER, _NEWNS = 0x40000000, 0x20000000, 0x10000000, 0x20000  # clone flags (linux/sched.h)
_NOSUID, _NODEV, _REC, _PRIVATE = 2, 4, 0x4000, 0x40000  # mount flags (linux/mount.h)
_PDEATHSIG, _KEEPCAPS, _NO_NEW_PRIVS, _SIGKILL = 1, 8, 38, 9  # prctl options (linux/prctl.h); SIGKILL
_TIMED_OUT = 124  # the harness's exit status when it killed the program, as timeout(1)'s
_DAC_READ_SEARCH, _CAP_V3 = 2, 0x20080522  # linux/capability.h
_REFUSED = ("socket.", "ctypes.dl", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen")


def run(program: str, timeout: float = 10.0) -> str:
    """The status of one program (see module doc)."""
    return _run(program, timeout)[0]


def run_many(programs: list, timeout: float = 10.0, workers: int | None = None) -> list[str]:
    """Statuses of ``programs``, in order, ``workers`` (default: one per core) at a time; None is "no_code"."""
    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        return list(pool.map(lambda p: "no_code" if p is None else run(p, timeout), programs))


def isolation() -> str:
    """The network isolation a program gets here, from one empty run; RuntimeError when no program can run."""
    status, found = _run("", 10.0)
    if status != "correct":
        raise RuntimeError(f"sandbox: an empty program ends {status!r} ({found or 'the harness failed'})")
    return found


def _run(program: str, timeout: float, mode: str = "auto") -> tuple[str, str]:
    """(status, isolation); mode "sockets" skips the namespaces, so that tests reach the fallback."""
    sentinel = os.urandom(16).hex().encode()
    with tempfile.TemporaryDirectory(prefix="sandbox-", ignore_cleanup_errors=True) as cwd, \
            tempfile.TemporaryFile() as channel:
        if _as_nobody():
            os.chown(cwd, NOBODY, NOBODY)  # its directory is its own
        argv = [sys.executable, "-I", "-S", __file__, str(channel.fileno()), str(timeout), mode]
        with Popen(argv, bufsize=0, stdin=PIPE, stdout=DEVNULL, stderr=DEVNULL, cwd=cwd, env={},
                   pass_fds=(channel.fileno(),), start_new_session=True) as proc:
            try:
                with contextlib.suppress(BrokenPipeError):  # it died before reading it all: its verdict says so
                    proc.stdin.write(sentinel + b"\n" + program.encode(errors="replace"))
                    proc.stdin.close()
                timed_out = not _exits(proc.pid, timeout + GRACE)  # the harness's clock failed: ours
            finally:  # the whole group, finished or not: what it left running goes too
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        isolation_, _, verdict = os.pread(channel.fileno(), len(sentinel) + 64, 0).partition(b"\n")
    status = "correct" if verdict == sentinel else "failed" if verdict == b"failed" else "error"
    return "timeout" if timed_out or proc.returncode == _TIMED_OUT else status, isolation_.decode(errors="replace")


def _as_nobody() -> bool:
    """Whether programs run as nobody: as root, where nobody exists (a one-id user namespace runs them as is)."""
    with open("/proc/self/uid_map") as f:
        return os.geteuid() == 0 and any(int(a) <= NOBODY < int(a) + int(n) for a, _, n in map(str.split, f))


def _exits(pid: int, timeout: float) -> bool:
    """Whether child ``pid`` exits within ``timeout`` seconds: a pidfd, no polling (Popen.wait's costs 10 ms)."""
    with open(os.pidfd_open(pid), "rb", buffering=0) as pidfd:
        return bool(select.select([pidfd], [], [], timeout)[0])


def _refuse(event: str, args: tuple):
    """The audit hook without a network namespace: no socket, no native code loaded, no other program run."""
    if event.startswith(_REFUSED):
        raise PermissionError(f"sandbox: {event} refused")


def _child(channel: int, timeout: float, mode: str):
    """The harness, in the child: isolate, drop rights, limit, run the program from stdin, report, exit."""
    sentinel, _, program = sys.stdin.buffer.read().partition(b"\n")
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int):
        if result != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

    uid, gid, drop = os.getuid(), os.getgid(), _as_nobody()
    namespaces = mode == "auto" and libc.unshare(_NEWNET | _NEWPID | _NEWNS | (_NEWUSER if uid else 0)) == 0
    if namespaces and uid:  # a user namespace: keep the user's ids in it, or files cannot be created
        for name, line in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(line)
    if namespaces:  # fresh 16 MiB scratch places, its directory with them when it lies there: gone with it
        cwd = os.getcwd()
        check(libc.mount(None, b"/", None, _REC | _PRIVATE, None))  # no mount below reaches the system
        for path in filter(os.path.isdir, SCRATCH):
            check(libc.mount(b"tmpfs", path.encode(), b"tmpfs", _NOSUID | _NODEV, b"size=16m,mode=1777"))
        if not os.path.isdir(cwd):  # it lay in a SCRATCH place: a new one in its tmpfs, for nobody too
            os.makedirs(cwd)
            os.chmod(cwd, 0o1777)
        os.chdir(cwd)
    if pid := os.fork():  # the trusted half, beyond the program's reach (root, or outside its PID namespace), kills
        if timed_out := not _exits(pid, timeout):  # and reaps it, so that nothing is left to the system's init
            os.kill(pid, _SIGKILL)  # with a PID namespace, everything in it dies too
        os.waitpid(pid, 0)
        os._exit(_TIMED_OUT if timed_out else 0)
    check(libc.prctl(_KEEPCAPS, 1, 0, 0, 0))
    if drop:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    keep = 0 if os.access(os.__file__, os.R_OK) else 1 << _DAC_READ_SEARCH  # access() asks as nobody, no caps
    check(libc.capset((ctypes.c_uint32 * 2)(_CAP_V3, 0), (ctypes.c_uint32 * 6)(keep, keep, 0, 0, 0, 0)))
    check(libc.prctl(_NO_NEW_PRIVS, 1, 0, 0, 0))  # no setuid binary, no file capability gives them back
    check(libc.prctl(_PDEATHSIG, _SIGKILL, 0, 0, 0))  # after the uid change, which clears it: dies with its half
    if not namespaces:
        sys.addaudithook(_refuse)  # no Python code can remove it
    for limit, value in ((resource.RLIMIT_AS, MEMORY), (resource.RLIMIT_CPU, math.ceil(timeout) + 1),
                         (resource.RLIMIT_FSIZE, FILE_SIZE), (resource.RLIMIT_NOFILE, FILES),
                         (resource.RLIMIT_NPROC, PROCESSES)):
        resource.setrlimit(limit, (value, value))
    os.write(channel, b"network namespace\n" if namespaces else b"sockets blocked\n")
    failed, anything, write, leave = AssertionError, BaseException, os.write, os._exit  # the program may rebind them
    try:  # not __main__: a model's `if __name__ == "__main__":` demo (often input()) does not run, as in human-eval
        exec(compile(program, "<program>", "exec"), {"__name__": "__program__", "__builtins__": builtins})
    except failed:
        verdict = b"failed"
    except anything:  # SystemExit too: exit(0) before the tests is no pass
        verdict = b"error"
    else:
        verdict = sentinel
    write(channel, verdict)
    leave(0)


if __name__ == "__main__":
    _child(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3])
