"""The sandboxed side of sandbox.py, and the plain-data encoding both sides use. A separate file so that
sandbox.py stays within its line budget and this one can be handed to the child as source
(``python -I -S -c``: the child never reads the checkout, wherever it lies).

The child: moves the two protocol pipes off fds 0 and 1 (stdin, stdout and stderr become /dev/null, so print()
cannot corrupt a reply), sets oom_score_adj 1000 and the limits, runs the program (the task's setup + the
model's code) in its own globals, replies, then serves calls: each request is [name, args, kwargs] as plain
data, each reply ["r", value], ["e", exception name] or ["x"] (the value is not plain data). It never sees a
test or an expected value. Every reply is untrusted: the grader only ever decodes plain data out of it (dec),
it never runs anything it got.
"""
import builtins
import json
import os
import sys


def enc(v):
    """Plain built-in data -> JSON with tagged containers (subclasses count as their base: a namedtuple is a
    tuple; a builtin type, say `int`, is its name); TypeError for anything else."""
    if v is None or v is True or v is False:
        return v
    if isinstance(v, type) and getattr(builtins, v.__name__, None) is v:  # MBPP 533 passes `int`
        return ["T", v.__name__]
    for kind in (int, float, str):
        if isinstance(v, kind):
            return kind(v) if type(v) is not kind else v
    if isinstance(v, complex):
        return ["c", v.real, v.imag]
    if isinstance(v, bytes):
        return ["b", bytes(v).hex()]
    if isinstance(v, dict):
        return ["d", *[enc(x) for kv in dict.items(v) for x in kv]]
    for kind, tag in ((list, "l"), (tuple, "t"), (set, "s"), (frozenset, "f")):
        if isinstance(v, kind):
            return [tag, *map(enc, kind.__iter__(v))]
    raise TypeError(f"not plain data: {type(v).__name__}")


def dec(v):
    """enc's output -> the plain value; any error (bad tag, unhashable key) is the caller's failed call."""
    if not isinstance(v, list):
        if isinstance(v, dict):
            raise TypeError("not a tagged value")
        return v
    tag, items = v[0], v[1:]
    if tag == "c":
        return complex(float(items[0]), float(items[1]))
    if tag == "b":
        return bytes.fromhex(items[0])
    if tag == "T" and isinstance(kind := getattr(builtins, items[0]), type):
        return kind
    items = [dec(x) for x in items]
    return dict(zip(items[::2], items[1::2], strict=True)) if tag == "d" else \
        {"l": list, "t": tuple, "s": set, "f": frozenset}[tag](items)


def frame(obj) -> bytes:
    data = json.dumps(obj).encode()
    return len(data).to_bytes(8, "big") + data


def _read(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        if not (chunk := os.read(fd, n - len(data))):
            os._exit(0)  # the grader is done (or gone)
        data += chunk
    return data


def _attempt(function) -> list:
    try:
        value = function()
    except BaseException as e:  # SystemExit too: exit(0) is no return
        return ["e", type(e).__name__]
    try:
        return ["r", enc(value)]
    except BaseException:  # not plain data, or too deep to encode
        return ["x"]


def _refuse(event: str, args: tuple):
    """Audit hook without namespaces: no socket, no native code loaded, no other program run (best effort)."""
    if event.startswith(("socket.", "ctypes.dl", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
                         "subprocess.Popen")):
        raise PermissionError(f"sandbox: {event} refused")


def main(limits: dict, audit: bool):
    import resource
    requests, replies, null = os.dup(0), os.dup(1), os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    try:  # the kernel's OOM killer takes a program before anything else
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))
    if audit:
        sys.addaudithook(_refuse)  # no Python code can remove it
    receive, loads, write = (lambda: _read(requests, int.from_bytes(_read(requests, 8), "big")),
                             json.loads, os.write)

    def send(reply: bytes):
        while reply:
            reply = reply[write(replies, reply):]
    program = receive().decode(errors="replace")
    # not __main__: a model's `if __name__ == "__main__":` demo (often input()) does not run, as in human-eval
    glob = {"__name__": "__program__", "__builtins__": builtins}
    send(frame(_attempt(lambda: exec(compile(program, "<program>", "exec"), glob))))
    while True:
        name, args, kwargs = dec(loads(receive()))
        send(frame(_attempt(lambda: glob[name](*args, **kwargs))))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), sys.argv[2] == "sockets")
