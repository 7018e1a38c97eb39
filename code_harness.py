"""The trusted side of code grading (sandbox.py starts the process): the tests run here, in the grader; each
call of the program's functions goes to its sandboxed process (sandbox_child.py) and only plain data comes
back. A separate file so that sandbox.py (the isolation) stays within its line budget.

grade(): the program's load first (an exception in it: "error"); then ``setup`` (the task's own code:
HumanEval's prompt, so its helpers such as `poly` are the task's, not the program's; MBPP's test_setup_code)
and ``tests`` run here, with each name in ``calls`` a stub that sends the call. "failed": the tests'
AssertionError; "error": another exception (a failed call: the program raised, returned something that is not
plain data, or died; a test using a name nothing defines); "timeout": the program's deadline passed while it
loaded or answered a call; "correct": the tests returned. No tests: "correct" once the program loaded (only
the program says so: no verdict to trust).
"""
import functools
import contextlib
import json
import os
import select
import signal
import sys
import time

import sandbox_child

REPLY = 4 << 20  # bytes: a longer reply is a failed call


class Dead(BaseException):  # the program timed out or died: a BaseException, so that no test catches it
    pass


class CallFailed(Exception):
    pass


def grade(program: "Program", tests: str, setup: str, calls) -> str:
    try:
        program.call(None)  # its load
        if not tests:
            return "correct"
        namespace = {"__name__": "__grader__"}
        exec(setup, namespace)
        # MBPP's `sys.getsizeof` that the reference imported
        for name in _stdlib_names(tests) - namespace.keys():
            namespace[name] = __import__(name)
        namespace.update({name: functools.partial(program.call, name) for name in calls})
        exec(compile(tests, "<tests>", "exec"), namespace)
        return "correct"
    except AssertionError:
        return program.dead or "failed"
    except (Exception, Dead):
        return program.dead or "error"


@functools.lru_cache(maxsize=4096)
def _stdlib_names(tests: str) -> frozenset:
    import ast
    names = {n.id for n in ast.walk(ast.parse(tests)) if isinstance(n, ast.Name)}
    return frozenset(n for n in names if n in sys.stdlib_module_names and n not in dir(__builtins__))


class Program:
    """A started sandboxed process (its stdin takes requests, its stdout gives replies) and its deadline."""

    def __init__(self, proc, program: str, deadline: float):
        self.proc, self.program, self.deadline, self.dead = proc, program, deadline, None
        self.requests, self.replies = proc.stdin.fileno(), proc.stdout.fileno()
        os.set_blocking(self.requests, False)

    def call(self, name, /, *args, **kwargs):
        """name None: send the program, wait for its load; else call its function ``name`` with plain data."""
        self._send(self.program.encode(errors="replace") if name is None else
                   json.dumps(sandbox_child.enc([name, args, kwargs])).encode())
        reply = ["x"]
        try:
            reply = json.loads(self._receive())
            if reply[0] == "r":
                return sandbox_child.dec(reply[1])
        except (ValueError, TypeError, KeyError, IndexError, RecursionError, MemoryError):  # not plain data
            pass
        raise CallFailed(f"{name or 'the program'}: {reply[1] if reply[0] == 'e' else 'no plain data'}")

    def close(self, cleanup):
        """End of requests: it exits, and its PID namespace with it; killed when it does not at once."""
        self.proc.stdin.close()
        if self.dead or not exits(self.proc.pid, 0.5):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc.stdout.close()
        cleanup()

    def _wait(self, fd: int, write: bool = False):
        left = self.deadline - time.monotonic()
        if left <= 0 or not select.select([] if write else [fd], [fd] if write else [], [], left)[write]:
            self.dead = "timeout"
            raise Dead

    def _send(self, data: bytes):
        data = len(data).to_bytes(8, "big") + data
        while data:
            self._wait(self.requests, write=True)
            try:
                data = data[os.write(self.requests, data):]
            except OSError:  # BrokenPipeError: it died
                self.dead = "error"
                raise Dead from None

    def _receive(self) -> bytes:
        data, need = bytearray(), 8
        while len(data) < need:
            self._wait(self.replies)
            if not (chunk := os.read(self.replies, min(need - len(data), 1 << 20))):
                self.dead = "error"
                raise Dead
            data += chunk
            if need == 8 and len(data) == 8 and (need := 8 + int.from_bytes(data, "big")) > REPLY:
                raise ValueError("reply too long")
        return bytes(data[8:])


def exits(pid: int, timeout: float) -> bool:
    """Whether child ``pid`` exits in ``timeout`` seconds: a pidfd, no polling (Popen.wait's costs 10 ms)."""
    with open(os.pidfd_open(pid), "rb", buffering=0) as pidfd:
        return bool(select.select([pidfd], [], [], timeout)[0])


def cgroup_parents(limit: dict) -> tuple:
    """(directory, {file: limit}) where root can make program cgroups (v1 memory and pids, or v2), probed."""
    found = []
    if os.geteuid() == 0:
        memory, processes = limit["MEMORY"], limit["PROCESSES"]
        for line in open("/proc/self/cgroup"):
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name, limits in (("memory", {"memory.limit_in_bytes": memory}),
                                 ("pids", {"pids.max": processes})):
                if name in controllers.split(","):
                    found.append((f"/sys/fs/cgroup/{name}{path}".rstrip("/"), limits))
            if not controllers and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
                found.append((f"/sys/fs/cgroup{path}".rstrip("/"),
                              {"memory.max": memory, "pids.max": processes}))
    return tuple(parent for parent in found if cgroups(None, [parent]))


def cgroups(pid: int | None, parents) -> list:
    """Fresh cgroups with the limits, ``pid`` moved in (None: a probe, removed at once); those that worked."""
    made = []
    for parent, limits in parents:
        path = f"{parent}/sandbox-{os.urandom(8).hex()}"
        with contextlib.suppress(OSError):
            os.mkdir(path)
            for name, value in {**limits, **({"cgroup.procs": pid} if pid else {})}.items():
                with open(f"{path}/{name}", "w") as f:
                    f.write(str(value))
            made.append(path)
        if pid is None or path not in made:
            with contextlib.suppress(OSError):
                os.rmdir(path)
    return made


def rmdir(path: str):
    for _ in range(250):  # its last processes may take a moment to leave the cgroup
        with contextlib.suppress(OSError):
            return os.rmdir(path)
        time.sleep(0.002)
