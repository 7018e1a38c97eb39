"""sandbox.py (with code_harness.py, sandbox_child.py): statuses, tests run in the grader and plain data back,
the child's limits and isolation (bwrap, seccomp, cgroup), adversarial programs (each must end as expected
within its limit and change nothing outside the sandbox), the fallback without namespaces, MBPP / HumanEval
reference solutions through tasks.code_task, and a copy of the checkout under /tmp in a folder with a space.
The adversarial programs run in parallel, each timed, in batches: quick, burning CPU until killed, fork bomb."""
import json
import os
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import sandbox

SLOW = 1.5  # seconds: the wall-clock limit of the programs that run until killed
QUICK = 10.0  # the limit of the others: they must end by themselves, well before it (2 shared cores)
QUICK_END = 5.0
ROOT = os.geteuid() == 0
NAMESPACES = sandbox.isolation().startswith("bubblewrap")
CGROUP = NAMESPACES and bool(sandbox._cgroups())
MARKER = f"sbx{os.getpid() % 10000}"  # process name (comm) of what the fork bomb and the daemon start
PID_NAME = "import ctypes\nctypes.CDLL(None).prctl(15, b'{marker}', 0, 0, 0)  # PR_SET_NAME\n"
F = "assert f() == 1"  # the tests of most programs below: run here, in the grader

QUICK_PROGRAMS = {  # name: (program, tests, expected status); {..} filled in by the fixture
    "sys.exit(0) while loading": ("import sys\nsys.exit(0)\ndef f():\n    return 1", F, "error"),
    "os._exit(0) in the call": ("import os\ndef f():\n    os._exit(0)", F, "error"),
    "raise SystemExit(0) in the call": ("def f():\n    raise SystemExit(0)", F, "error"),
    "monkeypatched sys.exit and os._exit": (
        "import os, sys\nsys.exit = os._exit = lambda *a: None\ndef f():\n    sys.exit(0)\n    return 2", F, "failed"),
    "redefined AssertionError": (
        "import builtins\nbuiltins.AssertionError = AssertionError = KeyError\ndef f():\n    return 2", F, "failed"),
    "forged replies on every descriptor": (
        "import os\ndef f():\n    for fd in range(64):\n        try:\n            os.write(fd, b'correct' * 9)\n"
        "        except OSError:\n            pass\n    return 2", F, "error"),
    "100 MB of output": (
        "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(100):\n    print(chunk)\n    sys.stderr.write(chunk)\n"
        "def f():\n    return 2", F, "failed"),
    "memory hog": ("hog = []\nwhile True:\n    hog.append(bytearray(1 << 24))", "", "error"),
    "deep recursion": ("def f(n=0):\n    return f(n + 1)", F, "error"),
    "C stack overflow": (
        "import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(n=0):\n    return list(map(f, [n]))", F, "error"),
    "the parent's environment": ("import os\ndef f():\n    return os.environ.get('SANDBOX_CANARY')",
                                 "assert f() == '{canary}'", "failed"),
    "a network connection": (
        "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')", "", "error"),
    "an object equal to anything": (
        "class E:\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\ndef f():\n    return E()",
        F, "error"),
    "an int subclass equal to anything": (
        "class E(int):\n    __eq__ = lambda s, o: True\ndef f():\n    return E(7)", F, "failed"),
    "the tests and expected values out of reach": (
        "import os, sys\ndef f():\n    seen = ' '.join(sys.argv) + str(dict(os.environ))\n"
        "    for pid in os.listdir('/proc'):\n        for name in ('cmdline', 'environ'):\n            try:\n"
        "                seen += open(f'/proc/{{pid}}/{{name}}', 'rb').read().decode(errors='replace')\n"
        "            except OSError:\n                pass\n"
        "    return 'TOKEN' + '{canary}' if '{canary}' in seen else 'no'", "assert f() == 'TOKEN{canary}'", "failed"),
}
ROOT_PROGRAMS = {  # outside the namespaces, the program's uid may be root: it sees nothing to change
    "the parent's /proc environ": ("open('/proc/{pid}/environ', 'rb').read()", "", "error"),
    "writing and deleting files outside": (
        "import os\nattempts = [lambda: os.remove('{canary_file}'), lambda: open('{canary_file}', 'w'),\n"
        "            lambda: open('{canary_dir}/new', 'w'), lambda: os.rename('{canary_file}', '{canary_dir}/moved'),\n"
        "            lambda: os.chmod('{canary_file}', 0o777)]\ndef f():\n    won = 0\n"
        "    for attempt in attempts:\n        try:\n            attempt()\n            won += 1\n"
        "        except OSError:\n            pass\n    return won", "assert f() == 0", "correct"),
    "reading /etc/shadow and /root": ("import os\ndef f():\n    return os.path.exists('/etc/shadow') or "
                                      "os.path.exists('/root/.bashrc')", "assert f() is False", "correct"),
}
SLOW_PROGRAMS = {
    "infinite loop while loading": ("while True:\n    pass", "", "timeout"),
    "infinite loop in a call": ("def f():\n    while True:\n        pass", F, "timeout"),
    "own SIGALRM handler": (
        "import signal\nsignal.signal(signal.SIGALRM, lambda *a: None)\nsignal.alarm(1)\nwhile True:\n    pass",
        "", "timeout"),
}
NAMESPACE_PROGRAMS = {  # without a PID namespace a setsid escapee survives (module doc); the bomb runs alone
    "fork bomb": (PID_NAME + "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
                  "        pass", "", "timeout"),
    "daemon that leaves the process group": (
        PID_NAME + "import os, time\nos.setsid()\nif os.fork() == 0:\n    time.sleep(60)\nwhile True:\n    pass",
        "", "timeout"),
}


def _timed(job):
    program, tests, timeout = job
    start = time.perf_counter()
    status = sandbox.run(program, tests, calls=["f"], timeout=timeout)
    return status, time.perf_counter() - start


def _run_timed(programs: dict, timeout: float) -> dict:
    """name -> (status, seconds), all in parallel (each waits on its own child)."""
    if not programs:
        return {}
    with ThreadPoolExecutor(len(programs)) as pool:
        return dict(zip(programs, pool.map(_timed, [(p, t, timeout) for p, t, _ in programs.values()])))


def _processes_named(name: str) -> list:
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                found.append(comm.parent.name)
        except OSError:  # it ended while we looked
            pass
    return found


@pytest.fixture(scope="module")
def adversarial():
    """Runs every adversarial program once; name -> (status, seconds), plus what was checked around them.
    The canary lies beside this file: under /tmp the namespace's private /tmp would hide it."""
    canary_dir = Path(tempfile.mkdtemp(prefix=".sandbox-canary-", dir=Path(__file__).parent))
    canary_dir.chmod(0o755)  # anyone may look, only root may write
    canary_file = canary_dir / "canary.txt"
    canary_file.write_text("unchanged")
    canary_file.chmod(0o644)
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    fill = dict(canary=os.urandom(8).hex(), port=server.getsockname()[1], pid=os.getpid(), marker=MARKER,
                canary_file=canary_file, canary_dir=canary_dir)
    os.environ["SANDBOX_CANARY"] = fill["canary"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        quick = {**QUICK_PROGRAMS, **(ROOT_PROGRAMS if ROOT else {})}
        slow = {**SLOW_PROGRAMS, **(NAMESPACE_PROGRAMS if NAMESPACES else {})}
        results = {}
        for batch, timeout in ((quick, QUICK), ({n: p for n, p in slow.items() if n != "fork bomb"}, SLOW),
                               ({n: p for n, p in slow.items() if n == "fork bomb"}, SLOW)):
            results.update(_run_timed({n: (p.format(**fill), t.format(**fill), s) for n, (p, t, s) in batch.items()},
                                      timeout))
        canary = sorted(p.name for p in canary_dir.iterdir()), canary_file.read_text(), canary_file.stat().st_mode
    finally:
        del os.environ["SANDBOX_CANARY"]
        shutil.rmtree(canary_dir)
    deadline = time.time() + 2  # a killed namespace's last processes may take a moment to go
    while _processes_named(MARKER) and time.time() < deadline:
        time.sleep(0.05)
    try:
        server.accept()
        connected = True
    except BlockingIOError:
        connected = False
    server.close()
    return dict(results=results, expected={**quick, **slow}, connected=connected,
               rss_growth=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss, left=_processes_named(MARKER),
               canary=canary)


@pytest.mark.parametrize("name", [*QUICK_PROGRAMS, *ROOT_PROGRAMS, *SLOW_PROGRAMS, *NAMESPACE_PROGRAMS])
def test_adversarial_program(adversarial, name):
    if name in ROOT_PROGRAMS and not ROOT:
        pytest.skip("run as a user, the program has the user's rights (sandbox.py's module doc)")
    if name in NAMESPACE_PROGRAMS and not NAMESPACES:
        pytest.skip("no PID namespace here: a setsid escapee would survive (sandbox.py's module doc)")
    status, seconds = adversarial["results"][name]
    assert status == adversarial["expected"][name][2]
    if status == "timeout":
        assert SLOW <= seconds < SLOW + 2.5
    else:
        assert seconds < QUICK_END


def test_nothing_changed_outside(adversarial):
    assert not adversarial["connected"]  # the server saw no connection
    assert adversarial["rss_growth"] < 50 << 10  # KiB: the 100 MB of output never reached this process
    assert adversarial["left"] == []  # fork bomb and daemon: no process left
    if ROOT:  # the canary file, its folder and its mode as they were
        assert adversarial["canary"] == (["canary.txt"], "unchanged", 0o100644)


def test_statuses_in_order_and_no_code():
    jobs = [dict(code="def f(x):\n    return x + 1", tests="assert f(1) == 2", calls=["f"]), None,
            dict(code="def f(x):\n    return x", tests="assert f(1) == 2", calls=["f"]), "def f(:\n    pass",
            dict(code="def f(x):\n    raise KeyError(x)", tests="assert f(1) == 2", calls=["f"]),
            dict(code="def f(x):\n    while True:\n        pass", tests="assert f(1) == 2", calls=["f"]),
            dict(code="def f(x):\n    return x", tests="assert g(1) == 1", calls=["f"]),  # g: defined nowhere
            dict(code="import re, collections, heapq\ndef f(s):\n    return [bool(re.fullmatch('a+', s)), s]",
                 tests="assert f('aaa') == [True, 'aaa']", calls=["f"])]
    assert sandbox.run_many(jobs, timeout=SLOW) == ["correct", "no_code", "failed", "error", "error", "timeout",
                                                    "error", "correct"]
    assert sandbox.run("x = 1") == "correct"


def test_plain_data_round_trip_and_refusals():
    value = "{1: [2, (3, 4.5, 'a', b'b', None, True, 1j, frozenset({1}))], 2: {3}, 'n': float('inf')}"
    code = f"import collections\ndef f(kind):\n    return {{'value': {value}, 'gen': (i for i in []), " \
           "'namedtuple': collections.namedtuple('P', 'x y')(1, 2), 'counter': collections.Counter('aab')}[kind]"
    assert sandbox.run(code, f"assert f('value') == {value}", calls=["f"]) == "correct"
    assert sandbox.run(code, "assert f('namedtuple') == (1, 2) and f('counter') == {'a': 2, 'b': 1}",
                       calls=["f"]) == "correct"
    assert sandbox.run(code, "f('gen')", calls=["f"]) == "error"  # a generator is not plain data
    keywords = "def f(**k):\n    return sorted(k)"
    assert sandbox.run(keywords, "assert f(b=1, a=2) == ['a', 'b']", calls=["f"]) == "correct"


def test_state_kept_between_calls_one_process():
    code = "import os\nseen = []\ndef f(x):\n    seen.append(x)\n    return [len(seen), os.getpid()]"
    assert sandbox.run(code, "a, b = f(1), f(2)\nassert a[0] == 1 and b[0] == 2 and a[1] == b[1]",
                       calls=["f"]) == "correct"


def test_programs_run_in_parallel():
    start = time.perf_counter()
    assert sandbox.run_many(["import time\ntime.sleep(1)"] * 4, workers=4) == ["correct"] * 4
    assert time.perf_counter() - start < 2.5  # one after another: over 4 s


def test_child_limits_and_identity():
    code = ("import os, resource as r\ndef f():\n    status = open('/proc/self/status').read()\n"
            "    return [r.getrlimit(r.RLIMIT_AS), r.getrlimit(r.RLIMIT_FSIZE)[0], r.getrlimit(r.RLIMIT_NOFILE)[0],"
            " r.getrlimit(r.RLIMIT_CPU)[0], 'NoNewPrivs:\\t1' in status, os.getuid(), os.getgid(), os.getpid(),"
            " open('/proc/self/oom_score_adj').read().strip(), [l.split()[1] for l in status.splitlines()"
            " if l.startswith(('CapEff', 'CapPrm', 'CapBnd', 'CapAmb', 'Seccomp:'))]]")
    uid = sandbox.NOBODY if NAMESPACES else os.getuid()
    caps = ["0000000000000000"] * 4 + (["2"] if NAMESPACES and sandbox._seccomp() else [])
    tests = (f"limits = f()\nassert limits[:5] == [({sandbox.MEMORY}, {sandbox.MEMORY}), {sandbox.FILE_SIZE}, "
             f"{sandbox.FILES}, 3, True]\nassert limits[5:7] == [{uid}, {uid}] and limits[8] == '1000'\n"
             + (f"assert limits[7] == 2 and limits[9][:len({caps})] == {caps}\n" if NAMESPACES else ""))
    assert sandbox.run(code, tests, calls=["f"], timeout=SLOW) == "correct"


@pytest.mark.skipif(not NAMESPACES, reason="without bwrap the program has the user's rights (sandbox.py's doc)")
def test_refused_kernel_calls_and_no_host_traces(tmp_path, monkeypatch):
    """Seccomp's EPERM for keyrings, open_by_handle_at, mount, namespaces, ptrace, bpf, io_uring; nothing on disk."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    calls = {"keyctl": (250, 0, 0, 0), "open_by_handle_at": (304, 0, 0, 0), "mount": (165, 0, 0, 0, 0),
             "unshare": (272, 0x10000000), "setns": (308, 0, 0), "ptrace": (101, 16, 1, 0, 0), "bpf": (321, 0, 0, 0),
             "io_uring_setup": (425, 1, 0)}
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\ndef f(args):\n"
            "    return [libc.syscall(*args), ctypes.get_errno()]\nopen('here.txt', 'w').write('x')")
    expected = [-1, 1] if sandbox._seccomp() else None
    tests = "".join(f"assert f({list(a)}) == {expected} or {expected is None}\n" for a in calls.values())
    assert sandbox.run(code, tests, calls=["f"]) == "correct"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not CGROUP, reason="no cgroup here: memory is capped per process (sandbox.py's doc)")
def test_memory_of_all_processes_together_capped():
    code = ("import os, time\ndef f():\n    pids = []\n    for _ in range(3):\n        if (pid := os.fork()) == 0:\n"
            "            b = bytearray(700 << 20)\n            time.sleep(1)\n            os._exit(0)\n"
            "        pids.append(pid)\n    return [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]")
    assert sandbox.run(code, "assert f() == [0, 0, 0]", calls=["f"]) == "failed"  # one of them was killed


def test_working_directory_fresh():
    program = ("import os\nassert os.listdir('.') == []\nopen('a.txt', 'w').write('x')\n"
               "open(os.path.join(os.getcwd(), 'b.txt'), 'w').write('y')\n"
               "def f():\n    return sorted(os.listdir('.'))")
    job = dict(code=program, tests="assert f() == ['a.txt', 'b.txt']", calls=["f"])
    assert sandbox.run_many([job] * 2) == ["correct"] * 2


@pytest.mark.skipif(not NAMESPACES, reason="without a mount namespace /tmp is shared (sandbox.py's module doc)")
def test_scratch_places_are_private():
    name = f"sandbox-test-{os.urandom(4).hex()}"
    places = [p for p in sandbox.SCRATCH if os.path.isdir(p)]
    program = (f"def f():\n    for place in {places!r}:\n        open(place + '/{name}', 'w').write('x')\n"
               f"    return [open(place + '/{name}').read() for place in {places!r}]")
    jobs = [dict(code=program, tests=f"assert f() == {['x'] * len(places)}", calls=["f"]),
            "open('/dev/shm/big', 'wb').write(b'x' * (17 << 20))"]
    assert sandbox.run_many(jobs) == ["correct", "error"]
    assert not [p for p in places if os.path.exists(f"{p}/{name}")]


def test_fallback_blocks_sockets_native_code_and_programs():
    """Mode "sockets": what runs where bwrap cannot (the audit hook)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    port = server.getsockname()[1]
    programs = [f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x')",
                "import _socket\n_socket.socket()", "import ctypes\nctypes.CDLL(None)",
                "import subprocess\nsubprocess.run(['true'])", "import os\nos.system('true')"]
    with ThreadPoolExecutor(len(programs) + 1) as pool:
        results = list(pool.map(lambda p: sandbox.run(p, timeout=QUICK, mode="sockets"), programs + ["x = 1"]))
    assert results == ["error"] * len(programs) + ["correct"]
    assert sandbox.run("def f(x):\n    return x * 2", "assert f(2) == 4", calls=["f"], mode="sockets") == "correct"
    with pytest.raises(BlockingIOError):
        server.accept()
    server.close()


def test_reference_solutions_pass(shared_data):
    """A sample of MBPP and HumanEval reference solutions, fenced as a model would write them, pass through
    tasks.code_task; MBPP 367 and 927 fail with their own code (NameError: Node). All: eval.py --validate-grader."""
    import tasks
    rng = random.Random(0)
    for name, table, n in (("mbpp", tasks.BENCHMARKS, 20), ("humaneval", tasks.BENCHMARKS, 20)):
        raw = tasks.read_jsonl(shared_data / table[name][3])
        task = tasks.code_task(name, tasks.code_rows(name, raw))
        picked = sorted(rng.sample(range(len(raw)), n) + [i for i, r in enumerate(raw) if r.get("task_id") == 367])
        texts = [f"```python\n{raw[i].get('prompt', '')}{raw[i].get('code') or raw[i]['canonical_solution']}\n```"
                 for i in picked]
        statuses = [s for _, s in task.grade(texts, [task.rows[i]["answer"] for i in picked])]
        assert statuses == ["error" if raw[i].get("task_id") == 367 else "correct" for i in picked]
    assert re.fullmatch(r"(bubblewrap|sockets blocked).*", sandbox.isolation())


def test_checkout_anywhere(tmp_path):
    """The child never reads the checkout: a copy under /tmp, in a folder with a space, grades the same."""
    place = Path(tempfile.mkdtemp(prefix="sandbox copy ", dir="/tmp"))
    try:
        for name in ("sandbox.py", "code_harness.py", "sandbox_child.py"):
            shutil.copy(Path(sandbox.__file__).parent / name, place / name)
        script = ("import sandbox\nprint(sandbox.run('def f():\\n    return 1', 'assert f() == 1', calls=['f']), "
                  f"sandbox.isolation() == {sandbox.isolation()!r})")
        out = subprocess.run([sys.executable, "-c", script], cwd=place, capture_output=True, text=True, timeout=60)
        assert out.stdout.split() == ["correct", "True"], out.stderr
    finally:
        shutil.rmtree(place)


def test_callable_from_a_torch_process_with_threads():
    """The trainer's main thread, with torch's worker threads running: children are spawned, never forked."""
    torch = pytest.importorskip("torch")
    x = torch.randn(512, 512)
    assert (x @ x).shape == (512, 512) and torch.get_num_threads() >= 1
    jobs = [dict(code="def f():\n    return sum(range(4))", tests=f"assert f() == {v}", calls=["f"]) for v in (6, 7)]
    assert sandbox.run_many(jobs) == ["correct", "failed"]
