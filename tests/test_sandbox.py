"""sandbox.py: statuses and the sentinel, the child's limits and isolation, adversarial programs (each must
end failed / error / timeout within its limit and change nothing outside the sandbox), the fallback without
namespaces, and MBPP / HumanEval reference solutions through rewards.code_program. The adversarial programs
run in parallel, each timed, in batches: the quick ones, the ones that burn CPU until killed, the fork bomb."""
import json
import os
import random
import re
import resource
import shutil
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import rewards
import sandbox

SLOW = 1.5  # seconds: the wall-clock limit of the programs that run until killed
QUICK = 10.0  # the limit of the others: they must end by themselves, well before it (2 shared cores)
QUICK_END = 5.0
ROOT = os.geteuid() == 0
NAMESPACES = sandbox.isolation() == "network namespace"
MARKER = f"sbx{os.getpid() % 10000}"  # process name (comm) of what the fork bomb and the daemon start
PID_NAME = "import ctypes\nctypes.CDLL(None).prctl(15, b'{marker}', 0, 0, 0)  # PR_SET_NAME\n"

QUICK_PROGRAMS = {  # name: (program, expected status); {..} filled in by the fixture
    "sys.exit(0) before the tests": ("import sys\nsys.exit(0)\nassert False", "error"),
    "os._exit(0) before the tests": ("import os\nos._exit(0)\nassert False", "error"),
    "raise SystemExit(0)": ("raise SystemExit(0)\nassert False", "error"),
    "exit(0), no site: a NameError": ("exit(0)\nassert False", "error"),
    "monkeypatched sys.exit and os._exit": (
        "import os, sys\nsys.exit = os._exit = lambda *a: None\nsys.exit(0)\nos._exit(0)\nassert False", "failed"),
    "redefined AssertionError": (
        "import builtins\nbuiltins.AssertionError = AssertionError = KeyError\nassert 1 == 2", "failed"),
    "redefined builtins.__import__": (
        "import builtins\nbuiltins.__import__ = lambda *a, **k: None\nimport os\nassert os is None\nassert False",
        "failed"),
    "printed sentinel lookalikes": (
        "import os\nprint('correct')\nfor fd in range(64):\n    try:\n        os.write(fd, os.urandom(16).hex()"
        ".encode())\n    except OSError:\n        pass\nos._exit(0)", "error"),
    "100 MB of output": (
        "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(chunk)\n"
        "    sys.stderr.write(chunk)\nassert False", "failed"),
    "memory hog": ("hog = []\nwhile True:\n    hog.append(bytearray(1 << 24))", "error"),
    "deep recursion": ("def f(n):\n    return f(n + 1)\nf(0)", "error"),
    "C stack overflow": (
        "import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(n):\n    return list(map(f, [n]))\nf(0)", "error"),
    "the parent's environment": ("import os\nassert os.environ.get('SANDBOX_CANARY') == '{canary}'", "failed"),
    "a network connection": (
        "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')", "error"),
}
ROOT_PROGRAMS = {  # as root the program runs as nobody; a user's program has the user's rights (module doc)
    "the parent's /proc environ": ("open('/proc/{pid}/environ', 'rb').read()", "error"),
    "writing and deleting files outside": (
        "import os\nattempts = [lambda: os.remove('{canary_file}'), lambda: open('{canary_file}', 'w'),\n"
        "            lambda: open('{canary_dir}/new', 'w'), lambda: os.rename('{canary_file}', '{canary_dir}/moved'),\n"
        "            lambda: os.chmod('{canary_file}', 0o777)]\nwon = 0\n"
        "for attempt in attempts:\n    try:\n        attempt()\n        won += 1\n    except OSError:\n        pass\n"
        "assert won", "failed"),
}
SLOW_PROGRAMS = {
    "infinite loop": ("while True:\n    pass", "timeout"),
    "own SIGALRM handler": (
        "import signal\nsignal.signal(signal.SIGALRM, lambda *a: None)\nsignal.alarm(1)\nwhile True:\n    pass",
        "timeout"),
}
NAMESPACE_PROGRAMS = {  # without a PID namespace a setsid escapee survives (module doc); the bomb runs alone,
    "fork bomb": (PID_NAME + "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
                  "        pass", "timeout"),  # as its processes take the process quota that all programs share
    "daemon that leaves the process group": (
        PID_NAME + "import os, time\nos.setsid()\nif os.fork() == 0:\n    time.sleep(60)\nwhile True:\n    pass",
        "timeout"),
}


def _timed(job):
    program, timeout = job
    start = time.perf_counter()
    status = sandbox.run(program, timeout)
    return status, time.perf_counter() - start


def _run_timed(programs: dict, timeout: float) -> dict:
    """name -> (status, seconds), all in parallel (each waits on its own child)."""
    if not programs:
        return {}
    with ThreadPoolExecutor(len(programs)) as pool:
        return dict(zip(programs, pool.map(_timed, [(p, timeout) for p, _ in programs.values()])))


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
            results.update(_run_timed({n: (p.format(**fill), s) for n, (p, s) in batch.items()}, timeout))
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
    assert status == adversarial["expected"][name][1]
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
    programs = ["assert 1 + 1 == 2", None, "assert 1 + 1 == 3", "def f(:\n    pass", "raise KeyError(1)",
                "while True:\n    pass", "import re, collections, heapq\nassert re.fullmatch('a+', 'aaa')"]
    statuses = sandbox.run_many(programs, timeout=SLOW)
    assert statuses == ["correct", "no_code", "failed", "error", "error", "timeout", "correct"]
    assert sandbox.run("assert True") == "correct"


def test_programs_run_in_parallel():
    start = time.perf_counter()
    assert sandbox.run_many(["import time\ntime.sleep(1)"] * 4, workers=4) == ["correct"] * 4
    assert time.perf_counter() - start < 2.5  # one after another: over 4 s


def test_sentinel_out_of_reach():
    """Not in argv, the environment, stdin, its directory or the harness's file: no 32-hex-digit token."""
    program = ("import os, re, sys\nseen = ' '.join(sys.argv) + str(dict(os.environ)) + sys.stdin.read()\n"
               "seen += ''.join(open(f).read() for f in os.listdir('.')) + open(sys.argv[0]).read()\n"
               "assert sys.argv[0].endswith('sandbox.py') and not re.search('[0-9a-f]{32}', seen)")
    assert sandbox.run(program) == "correct"


def test_child_limits_and_identity():
    program = (f"import os, resource as r\nassert r.getrlimit(r.RLIMIT_AS) == ({sandbox.MEMORY}, {sandbox.MEMORY})\n"
               f"assert r.getrlimit(r.RLIMIT_FSIZE)[0] == {sandbox.FILE_SIZE}\n"
               f"assert r.getrlimit(r.RLIMIT_NOFILE)[0] == {sandbox.FILES}\n"
               f"assert r.getrlimit(r.RLIMIT_NPROC)[0] == {sandbox.PROCESSES}\n"
               f"assert r.getrlimit(r.RLIMIT_CPU)[0] == 3\n"  # ceil(1.5) + 1
               f"assert 'NoNewPrivs:\\t1' in open('/proc/self/status').read()\n"
               f"assert os.getuid() == os.getgid() == {sandbox.NOBODY if ROOT else os.getuid()}\n"
               + ("assert os.getpid() == 1\n" if NAMESPACES else ""))  # the first process of its PID namespace
    assert sandbox.run(program, SLOW) == "correct"


def test_working_directory_fresh_and_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    program = ("import os\nassert os.listdir('.') == []\nopen('a.txt', 'w').write('x')\n"
               "open(os.path.join(os.getcwd(), 'b.txt'), 'w').write('y')\n"
               "assert sorted(os.listdir('.')) == ['a.txt', 'b.txt']")
    assert sandbox.run_many([program] * 2) == ["correct"] * 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not NAMESPACES, reason="without a mount namespace /tmp is shared (sandbox.py's module doc)")
def test_scratch_places_are_private():
    name = f"sandbox-test-{os.urandom(4).hex()}"
    places = [p for p in sandbox.SCRATCH if os.path.isdir(p)]
    program = (f"for place in {places!r}:\n    open(place + '/{name}', 'w').write('x')\n"
               f"    assert open(place + '/{name}').read() == 'x'")
    assert sandbox.run_many([program, "open('/dev/shm/big', 'wb').write(b'x' * (17 << 20))"]) == ["correct", "error"]
    assert not [p for p in places if os.path.exists(f"{p}/{name}")]


def test_fallback_blocks_sockets_native_code_and_programs():
    """Mode "sockets": what runs where the namespaces are refused (the audit hook)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    port = server.getsockname()[1]
    programs = [f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x')",
                "import _socket\n_socket.socket()", "import ctypes\nctypes.CDLL(None)",
                "import subprocess\nsubprocess.run(['true'])", "import os\nos.system('true')"]
    with ThreadPoolExecutor(len(programs) + 1) as pool:
        results = list(pool.map(lambda p: sandbox._run(p, QUICK, "sockets"), programs + ["assert 1"]))
    assert results == [("error", "sockets blocked")] * len(programs) + [("correct", "sockets blocked")]
    with pytest.raises(BlockingIOError):
        server.accept()
    server.close()


def test_reference_solutions_pass(shared_data):
    """A sample of MBPP and HumanEval reference solutions, fenced as a model would write them, pass; MBPP 367
    and 927 fail with their own code (NameError: Node). All 1138: sandbox_note.md."""
    mbpp = [json.loads(line) for f in sorted((shared_data / "mbpp").glob("*.jsonl")) for line in open(f)]
    humaneval = [json.loads(line) for line in open(shared_data / "humaneval" / "test.jsonl")]
    rng = random.Random(0)
    mbpp = [r for r in mbpp if r["task_id"] in (367, 927)] + rng.sample(mbpp, 20)
    programs = [rewards.code_program(f"Here it is:\n```python\n{r['code']}\n```", r["test_setup_code"],
                                     "\n".join(r["test_list"])) for r in mbpp]
    programs += [rewards.code_program(f"```python\n{r['prompt']}{r['canonical_solution']}```\nDone.", r["prompt"],
                                      f"{r['test']}\ncheck({r['entry_point']})") for r in rng.sample(humaneval, 20)]
    statuses = sandbox.run_many(programs)
    expected = ["error" if r["task_id"] in (367, 927) else "correct" for r in mbpp] + ["correct"] * 20
    assert statuses == expected
    assert re.fullmatch(r"(network namespace|sockets blocked)", sandbox.isolation())


def test_callable_from_a_torch_process_with_threads():
    """The trainer's main thread, with torch's worker threads running: children are spawned, never forked."""
    torch = pytest.importorskip("torch")
    x = torch.randn(512, 512)
    assert (x @ x).shape == (512, 512) and torch.get_num_threads() >= 1
    assert sandbox.run_many(["assert sum(range(4)) == 6", "assert False"]) == ["correct", "failed"]
