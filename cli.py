"""Command lines, files and JSON for progrpo.py and eval.py: every bad input is one line on stderr
(naming the flag, file or path), never a traceback; nothing is written half or with NaN in it."""
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

from transformers import HfArgumentParser

UNSET = object()


def parse_args(cls, argv=None):
    """(cls instance, names of the flags given on the command line). A bad value or an unknown flag
    is one line (argparse would print the whole usage first, HfArgumentParser a traceback)."""
    parser = HfArgumentParser(cls)
    parser.error = lambda msg: sys.exit(f"error: {msg} (see --help)")  # sys.exit(str): that line, exit code 1
    parser.set_defaults(**{f.name: UNSET for f in dataclasses.fields(cls)})  # tells given flags from defaults
    ns, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unknown argument {unknown[0]!r}")
    given = {k: v for k, v in vars(ns).items() if v is not UNSET}
    return cls(**given), set(given)  # the dataclass fills in the rest


RANGES = {">= 0": lambda v: v >= 0, "> 0": lambda v: v > 0, ">= 1": lambda v: v >= 1,
          ">= 2": lambda v: v >= 2, "in (0, 1]": lambda v: 0 < v <= 1, "in [0, 1)": lambda v: 0 <= v < 1}


def check_ranges(args, rules: dict) -> None:
    """Stop with one line naming the first flag outside its range. rules = {field: range}, a range
    being a key of RANGES, prefixed 'int ' for whole numbers; NaN and inf are outside every range."""
    for name, rule in rules.items():
        value, integer = getattr(args, name), rule.startswith("int ")
        kind = int if integer else (int, float)
        if not (isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
                and RANGES[rule.removeprefix("int ")](value)):
            raise SystemExit(f"error: --{name.replace('_', '-')} {value}: must be "
                             f"{'an integer' if integer else 'a number'} {rule.removeprefix('int ')}")


def check_writable(path, flag: str, parents: bool = False) -> None:
    """Stop with one line unless `path` can be created: its folder exists (with parents=True, the
    nearest existing folder above it) and is writable. Checked before work whose result goes there."""
    folder = Path(path).absolute().parent
    while parents and not folder.exists():
        folder = folder.parent
    if not (folder.is_dir() and os.access(folder, os.W_OK)):
        raise SystemExit(f"error: {flag} {path}: {folder} is not an existing, writable folder")


def to_json(obj, **kw) -> str:
    """json.dumps with NaN and inf written as null: strict JSON parsers reject them."""
    def clean(x):
        if isinstance(x, (dict, list, tuple)):
            return {k: clean(v) for k, v in x.items()} if isinstance(x, dict) else [clean(v) for v in x]
        return None if isinstance(x, float) and not math.isfinite(x) else x
    return json.dumps(clean(obj), allow_nan=False, **kw)


def check_png(path, flag: str) -> None:
    """Stop with one line unless `path` is a new or existing file name ending in .png in a writable folder."""
    if Path(path).is_dir() or Path(path).suffix.lower() != ".png":
        raise SystemExit(f"error: {flag} {path}: give a file name ending in .png")
    check_writable(path, flag)


def write_atomic(path: Path, text: str) -> None:
    """Replace a file's contents all at once: a kill mid-write leaves the old file, not half a new one.
    A failed write (a full disk) is one line; the temp file is removed and `path` is as it was."""
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SystemExit(f"error: cannot write {path}: {e.strerror or e}; it was left as it was") from None
