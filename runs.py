"""A run folder (progrpo.py --out): one run per folder, locked while a process runs in it, checkpoints
written whole or not at all, and --resume that continues the run as it was configured."""
import fcntl
import itertools
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import torch

import cli


def last_checkpoint(run) -> Path | None:
    """The newest ckpt-NNNNNN folder of a run (zero-padded: the last in sorted order), or None."""
    ckpts = sorted(Path(run).glob("ckpt-*"))
    return ckpts[-1] if ckpts else None


def save_checkpoint(out: Path, step, model, opt):
    """Adapter (peft format) + optimizer/step/RNG, written to a temp folder then renamed: a
    ckpt-* folder is complete or absent. Older checkpoints are removed afterwards."""
    final, tmp = out / f"ckpt-{step:06d}", out / f".tmp-ckpt-{step:06d}"
    if final.exists():
        return
    if not all(p.isfinite().all() for p in model.parameters() if p.requires_grad):
        raise SystemExit(f"error: step {step}: the adapter holds NaN or inf; not saved (lower --lr)")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    torch.save({"step": step, "optimizer": opt.state_dict(), "rng": rng}, tmp / "state.pt")
    os.replace(tmp, final)
    for old in out.glob("ckpt-*"):
        if old != final:
            shutil.rmtree(old)


def holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.name != ".lock" for p in folder.iterdir())


def claim(folder: Path, new: bool):
    """Lock a run folder for this process: a second live process on it is refused. flock is
    released by the kernel when the process ends, even on kill -9, so a lock is never stale."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".lock", "a")
    except OSError as e:
        raise SystemExit(f"error: cannot create the run folder {folder}: {e.strerror}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"error: {folder} is in use by another live progrpo.py process") from None
    if new and holds_files(folder):  # another run got here between our check and the lock
        raise SystemExit(f"error: --out {folder} is not empty: continue its run with --resume {folder}")
    for tmp in folder.glob(".tmp-*"):  # left by a kill mid-write; no live process owns them now
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    return lock


def unique_folder(base: str) -> Path:
    """base, base-2, base-3, ...: the first that did not exist, created here (mkdir is atomic, so
    runs started in the same second get different folders)."""
    for i in itertools.count(1):
        folder = Path(base if i == 1 else f"{base}-{i}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
        except OSError as e:
            raise SystemExit(f"error: cannot create the run folder {folder}: {e.strerror}") from None


def resumed_args(cls, args, given: set):
    """The run's saved config as a `cls` (progrpo.Args); a flag given again must equal the saved value, except --steps."""
    run = Path(args.resume)
    try:
        saved = cls(**json.loads((run / "config.json").read_text()))
    except FileNotFoundError:
        raise SystemExit(f"error: --resume {run}: no config.json there") from None
    except (OSError, ValueError, TypeError) as e:  # unreadable, not JSON, not an Args
        raise SystemExit(f"error: --resume {run}: config.json is not a readable progrpo.py config "
                         f"({type(e).__name__}); the run cannot be continued") from None
    for name in sorted(given - {"resume", "steps"}):
        if getattr(args, name) != getattr(saved, name):
            raise SystemExit(f"error: --{name.replace('_', '-')} {getattr(args, name)} differs from the run's "
                             f"{getattr(saved, name)}: --resume continues a run as configured (only --steps may "
                             f"change); start a new run for other settings")
    return replace(saved, resume=str(run), out=str(run), steps=args.steps if "steps" in given else saved.steps)


def read_metrics(path: Path, start: int) -> list:
    """metrics.jsonl up to the checkpoint's step (later steps are redone). A torn last line (a kill
    or a full disk mid-append) is dropped and said; a bad line before it stops with one line."""
    if not path.exists():
        return []
    lines = path.read_bytes().decode(errors="replace").split("\n")
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            if line.strip():
                rows.append(json.loads(line))
                rows[-1]["step"] = int(rows[-1]["step"])
        except (ValueError, KeyError, TypeError):
            if n < len(lines):  # a line that ends in a newline was written whole, so it is not torn
                raise SystemExit(f"error: {path}: line {n} is corrupt; fix or delete it, then --resume") from None
            print(f"note: {path}: dropped a torn last line (the run was killed mid-write)")
    return [m for m in rows if m["step"] <= start]


def check_run_folder(args) -> tuple[Path | None, int]:
    """Read-only checks before anything loads: a new run's --out is empty (or new) and can be
    created; a resumed run has a checkpoint at or below --steps. Returns (checkpoint, its step)."""
    if not args.resume:
        out = Path(args.out or "runs")
        if args.out and (out.is_file() or holds_files(out)):
            raise SystemExit(f"error: --out {out} is not an empty folder"
                             + (f": continue its run with --resume {out}" if out.is_dir() else ""))
        cli.check_writable(out / "run", "--out", parents=True)
        return None, 0
    ckpt = last_checkpoint(args.resume)
    if ckpt is None:
        raise SystemExit(f"error: --resume {args.resume}: no checkpoint (ckpt-*) there")
    step = int(ckpt.name.split("-")[1])
    if args.steps < step:
        raise SystemExit(f"error: --steps {args.steps} is below the checkpoint's step {step}")
    return ckpt, step
