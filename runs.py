"""A run folder (progrpo.py --out): one run per folder, locked while a process runs in it, checkpoints
written whole or not at all, and --resume that continues the run as it was configured. As a command, it
plots runs' training curves:  python runs.py --plot curves.png --runs runs/a runs/b ...
"""
import dataclasses
import fcntl
import gc
import hashlib
import itertools
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import torch

import cli


def last_checkpoint(run) -> Path | None:
    """The newest ckpt-NNNNNN folder of a run (zero-padded: the last in sorted order), or None."""
    ckpts = sorted(Path(run).glob("ckpt-*"))
    return ckpts[-1] if ckpts else None


def save_checkpoint(out: Path, step, model, opt, scaler=None):
    """Adapter (peft format) + optimizer/loss scale (fp16)/step/RNG, written to a temp folder then renamed: a
    ckpt-* folder is complete or absent. Older checkpoints are removed afterwards."""
    final, tmp = out / f"ckpt-{step:06d}", out / f".tmp-ckpt-{step:06d}"
    if final.exists():
        return
    if not all(p.isfinite().all() for p in model.parameters() if p.requires_grad):
        raise SystemExit(f"error: step {step}: the adapter holds NaN or inf; not saved (lower --lr)")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = {"cpu": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    try:
        model.save_pretrained(tmp)
        torch.save({"step": step, "optimizer": opt.state_dict(), "rng": rng,
                    "scaler": scaler.state_dict() if scaler is not None else {}}, tmp / "state.pt")
        os.replace(tmp, final)
    except OSError as e:  # a full disk: the half-written folder goes, the last checkpoint stands
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"error: step {step}: cannot write the checkpoint {final.name}: {e.strerror or e}; "
                         f"{stands(out)}; free space, then --resume {out}") from None
    for old in out.glob("ckpt-*"):
        if old != final:
            shutil.rmtree(old)


def load_state(ckpt: Path, opt, scaler=None) -> None:
    """A checkpoint's optimizer state, fp16 loss scale, random streams (state.pt); one line if unreadable."""
    try:
        state = torch.load(ckpt / "state.pt", weights_only=False)
        opt.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):  # {}: not an fp16 run
            scaler.load_state_dict(state["scaler"])
    except Exception as e:  # truncated or foreign file: pickle, zip, key and shape errors vary
        raise SystemExit(f"error: {ckpt / 'state.pt'} is unreadable ({type(e).__name__}); "
                         f"the run cannot be continued from it") from None
    torch.set_rng_state(state["rng"]["cpu"])
    if state["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def append_metrics(out: Path, step: int, m: dict) -> None:
    """One step's line at the end of metrics.jsonl; a full disk is one line naming the steps lost since the
    last checkpoint (which --resume redoes)."""
    path = out / "metrics.jsonl"
    try:
        with path.open("a") as f:
            f.write(cli.to_json(m) + "\n")
    except OSError as e:
        ckpt = last_checkpoint(out)
        first = int(ckpt.name[5:]) + 1 if ckpt else 1
        lost = f"step {step} is" if first == step else f"steps {first}-{step} are"
        raise SystemExit(f"error: step {step}: cannot append to {path}: {e.strerror or e}; {stands(out)}, "
                         f"so {lost} lost; free space, then --resume {out} redoes "
                         f"{'it' if first == step else 'them'}") from None


def stands(out: Path) -> str:
    """Which checkpoint a stopped run can be resumed from, in words."""
    ckpt = last_checkpoint(out)
    return f"the last checkpoint, {ckpt.name}, stands" if ckpt else "no checkpoint was written"


# ---------------------------------------------------------------------------------------------
# The faults that stop a run in its loop: a signal, the GPU's memory running out.
def stop_on_signals(bar) -> list:
    """Ctrl-C or SIGTERM (how SLURM and Kubernetes stop a job) finishes the current step, so that the
    checkpoint and metrics.jsonl agree; a second one quits at once. Returns the list signals go to."""
    stop = []

    def on_signal(signum, _):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler)
        stop.append(signum)
        bar.write(f"{signal.Signals(signum).name}: finishing this step, then saving "
                  f"(Ctrl-C again quits without saving)")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    return stop


def interrupted(out, start, done, model, opt, scaler, bar, signum):
    """A signal arrived during the last step: save it (if one ran), say how to continue, exit."""
    if done > start:
        save_checkpoint(out, done, model, opt, scaler)
    bar.close()  # the message gets its own line
    print(f"interrupted after step {done}: checkpoint in {out}; continue with --resume {out}" if done
          else "interrupted before the first step: nothing saved")
    sys.exit(128 + signum)


def out_of_memory(phase, step, start, done, out, model, opt, scaler, args, bar):
    """torch.OutOfMemoryError during a step: free what the step held, save the last completed step (the
    weights hold its update: the failed step applied none) and exit with one line naming the phase, the
    peak and the flag to lower, one that --resume accepts (MAY_CHANGE) where there is one."""
    cuda = torch.cuda.is_available()
    peak = f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else "peak unknown (no CUDA)"
    card = (f" of the card's {torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB"
            if cuda else "")
    opt.zero_grad(set_to_none=True)  # a half-accumulated gradient
    gc.collect()  # the step's tensors are gone with its frames; return their blocks to the driver
    if cuda:
        torch.cuda.empty_cache()
    if done > start:
        save_checkpoint(out, done, model, opt, scaler)
    mb = args.micro_batch or args.prompts_per_step * args.group_size
    resumable = {  # the flag to lower that --resume accepts (the same run), else None
        "sampling": "--no-fast-generation" if args.fast_generation else None,
        "update": f"--micro-batch {mb // 2}" if mb > 1 else
                  None if args.gradient_checkpointing else "--gradient-checkpointing"}.get(phase)
    new_run = {"sampling": "--prompts-per-step or --max-new-tokens", "update": "--max-new-tokens"}[phase]
    bar.close()
    fix = (f"lower it with {resumable}, or in a new run {new_run}" if resumable
           else f"start a new run with lower {new_run}")
    saved = (f"step {done} is saved: --resume {out}{' ' + resumable if resumable else ''}" if done else
             "nothing was saved (no step had finished)")
    raise SystemExit(f"error: out of GPU memory in {phase} at step {step} ({peak}{card}): {fix}; {saved}")


def file_sha256(path) -> str:
    """What identifies a --data file: the sha256 of its bytes ("" when it cannot be read)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


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


# Flags --resume may change: the run's length, and how much memory a step takes (the same gradients; samples
# from the same policy): what an out-of-memory error asks to lower.
MAY_CHANGE = {"steps", "micro_batch", "fast_generation", "gradient_checkpointing"}


def resumed_args(cls, args, given: set):
    """The run's saved config as a `cls` (progrpo.Args); a flag given again must equal the saved value, except
    those in MAY_CHANGE."""
    run = Path(args.resume)
    try:
        config = json.loads((run / "config.json").read_text())
        sha = config.pop("data_sha256", "")  # what identifies --data's file, beside its absolute path
        saved = cls(**config)
    except FileNotFoundError:
        raise SystemExit(f"error: --resume {run}: no config.json there") from None
    except (OSError, ValueError, TypeError, AttributeError,
            RecursionError) as e:  # unreadable, not JSON, not an Args
        raise SystemExit(f"error: --resume {run}: config.json is not a readable progrpo.py config "
                         f"({type(e).__name__}); the run cannot be continued") from None
    same = lambda name, a, b: (os.path.abspath(a) == os.path.abspath(b) if name == "data" and a and b
                               else a == b)
    for name in sorted(given - {"resume"} - MAY_CHANGE):
        if not same(name, getattr(args, name), getattr(saved, name)):
            raise SystemExit(f"error: --{name.replace('_', '-')} {getattr(args, name)} differs from the "
                             f"run's {getattr(saved, name)}: --resume continues a run as configured (only "
                             f"--steps and the memory flags --micro-batch, --[no-]fast-generation, "
                             f"--[no-]gradient-checkpointing may change); start a new run for other settings")
    if sha and file_sha256(saved.data) not in (sha, ""):  # unreadable: its own one-line error when loaded
        raise SystemExit(f"error: --resume {run}: --data {saved.data} has changed since the run started "
                         f"(its sha256 differs from config.json's); restore that file, or start a new run "
                         f"on the new data")
    return dataclasses.replace(saved, resume=str(run), out=str(run),
                               **{name: getattr(args, name) for name in MAY_CHANGE & given})


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
                raise SystemExit(f"error: {path}: line {n} is corrupt; fix or delete it, "
                                 f"then --resume") from None
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
    if ckpt is None:  # stopped before its first checkpoint: the run starts again from step 0
        print(f"note: --resume {args.resume}: no checkpoint (ckpt-*) there yet; "
              f"restarting the run from step 0")
        return None, 0
    step = int(ckpt.name.split("-")[1])
    if args.steps < step:
        raise SystemExit(f"error: --steps {args.steps} is below the checkpoint's step {step}")
    return ckpt, step


# ---------------------------------------------------------------------------------------------
# Training curves: python runs.py --plot curves.png runs/a runs/b ...
PANELS = [("accuracy", "accuracy (share of correct completions)"), ("entropy", "token entropy"),
          ("distinct_correct", "distinct correct answers / solved prompt"),
          ("coverage", "coverage of the correct set"), ("arm_rel_spread", "ARM's within-group shift / |A|")]
SAME = {"out", "resume", "seed", "wandb", "sample_every", "save_every", "data_sha256"}  # not a new experiment


@dataclasses.dataclass
class PlotArgs:
    runs: list[str] = dataclasses.field(default_factory=list)  # progrpo.py --out folders, with metrics.jsonl
    plot: str = "curves.png"  # the PNG to write
    smooth: int = 5  # moving average over this many steps (1: none)


def read_run(folder: str) -> tuple[dict, list]:
    """(config.json, metrics.jsonl rows) of a run folder; one line naming it if either is missing or empty."""
    path = Path(folder)
    try:
        config = json.loads((path / "config.json").read_text())
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()
                if line.strip()]
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {folder}: no readable config.json and metrics.jsonl ({type(e).__name__}); "
                         f"is it a progrpo.py run folder?") from None
    if not rows:
        raise SystemExit(f"error: {folder}/metrics.jsonl is empty: the run has no finished step")
    return config, rows


def plot_curves(folders: list, plot: str, smooth: int = 5) -> dict:
    """One PNG, a panel per metric of PANELS that some run logged, against step. Runs whose flags differ only
    in --seed (and SAME) form one line: their mean, with a band from the lowest to the highest seed. The
    legend names each line by the flags that differ between lines. Returns {label: [folders]}."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    runs = [(f, *read_run(f)) for f in folders]
    key = lambda c: tuple(sorted((k, str(v)) for k, v in c.items() if k not in SAME))
    values = lambda k: {str(c.get(k)) for _, c, _ in runs}
    differ = sorted({k for _, c, _ in runs for k in c if k not in SAME and len(values(k)) > 1})
    lines = {}
    for f, c, rows in runs:
        lines.setdefault(key(c), []).append((f, c, rows))
    panels = [(m, title) for m, title in PANELS if any(m in r for _, _, rows in runs for r in rows)]
    cols = min(len(panels), 3)
    fig, axes = plt.subplots(-(-len(panels) // cols), cols,
                             figsize=(4.2 * cols, 3.4 * -(-len(panels) // cols)), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    labels = {}
    for members in lines.values():
        c = members[0][1]
        label = ", ".join(f"{k} {c.get(k)}" for k in differ) or "run"
        label += f" (seed{'s' * (len(members) > 1)} {', '.join(str(m[1].get('seed')) for m in members)})"
        labels[label] = [f for f, _, _ in members]
        for ax, (m, title) in zip(axes.flat, panels):
            curves = []
            for _, _, rows in members:
                steps = [r["step"] for r in rows]
                ys = torch.tensor([r.get(m) if r.get(m) is not None else float("nan") for r in rows]).double()
                curves.append((steps, moving_average(ys, smooth)))
            n = min(len(v) for _, v in curves)  # seeds may have run for different lengths
            stack = torch.stack([v[:n] for _, v in curves])
            (handle,) = ax.plot(curves[0][0][:n], stack.nanmean(0), label=label)
            if len(curves) > 1:
                low = stack.nan_to_num(nan=float("inf")).min(0).values
                high = stack.nan_to_num(nan=-float("inf")).max(0).values
                ax.fill_between(curves[0][0][:n], low, high, color=handle.get_color(), alpha=0.2)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{len(runs)} runs; moving average over {smooth} steps; bands: lowest to highest seed",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(plot, dpi=90)
    plt.close(fig)
    return labels


def moving_average(values: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the last k values at each step (fewer at the start), NaN (nothing measured) left out."""
    ok = ~values.isnan()
    csum = lambda x: torch.cat([torch.zeros(1, dtype=x.dtype), x.cumsum(0)])
    total, count = csum(values.nan_to_num()), csum(ok.double())
    i = torch.arange(1, len(values) + 1)
    return (total[i] - total[(i - k).clamp(min=0)]) / (count[i] - count[(i - k).clamp(min=0)])


def main(argv=None):
    args = cli.parse_args(PlotArgs, argv)[0]
    if not args.runs:
        raise SystemExit("error: --runs: give one or more run folders (progrpo.py --out)")
    cli.check_png(args.plot, "--plot")
    cli.check_ranges(args, dict(smooth="int >= 1"))
    for label, folders in plot_curves(args.runs, args.plot, args.smooth).items():
        print(f"{label}: {', '.join(folders)}")
    print(f"saved {args.plot}")


if __name__ == "__main__":
    main()
