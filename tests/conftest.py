"""Shared test set-up. Environment variables first: TRITON_INTERPRET must be set before any
@triton.jit function is defined, and the hub must never be asked (offline, ~48 s of retries)."""
import os
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


@pytest.fixture
def shared_data() -> Path:
    """The real problem sets laid out as ../shared/data (see its README); skip when absent."""
    if not DATA.is_dir():
        pytest.skip(f"real-data check skipped: {DATA} is absent (set PROGRPO_DATA_DIR)")
    return DATA
