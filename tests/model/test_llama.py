"""The model against trusted implementations: transformers' LlamaForCausalLM on the same weights (logits), torch's
FLOP counter (FLOPs per token), real parameter counts; document masking, KV cache, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from roost.errors import UsageError
from roost.infer.sampling import SamplingParams
from roost.infer.simple import generate
from roost.model.config import ModelConfig, from_depth, load_preset, presets
from roost.model.convert import hf_config, hf_state_dict, load_hf_dir, save_model_dir
from roost.model.llama import Llama

VARIANTS = {
    "gqa-tied": {},
    "untied-mha": {"tie_embeddings": False, "n_kv_heads": 4},
    "llama3-rope-scaling-bias": {
        "rope_scaling": {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        "rope_theta": 500000.0,
        "attention_bias": True,
    },
}


def _model(**over: object) -> Llama:
    torch.manual_seed(0)
    m = Llama(load_preset("tiny", **over))
    m.init_weights(seed=1)
    with torch.no_grad():  # non-trivial norms and biases, so a mix-up would show
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


def _hf_dir(m: Llama, d: Path) -> Path:
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(hf_config(m.config, 1, 0, 2)))
    save_file(hf_state_dict(m), str(d / "model.safetensors"))
    return d


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_match_transformers(variant: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    m = _model(**VARIANTS[variant])
    hf = AutoModelForCausalLM.from_pretrained(str(_hf_dir(m, tmp_path)), dtype=torch.float32).eval()
    x = torch.randint(0, m.config.vocab_size, (2, 200))  # past original_max_position_embeddings for the scaled RoPE
    with torch.no_grad():
        diff = (m(x) - hf(x).logits).abs().max().item()
    assert diff <= 1e-4
    back, _ = load_hf_dir(tmp_path)  # and the directory comes back into roost unchanged
    with torch.no_grad():
        assert torch.equal(back.eval()(x), m(x))


def test_saved_model_dir_loads_in_transformers(tmp_path: Path, tok_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = _model()
    save_model_dir(
        m,
        tmp_path / "m",
        tok_path,
        {
            "eos_token": "<|endoftext|>",
            "bos_token": "<|startoftext|>",
            "pad_token": "<|pad|>",
            "chat_template": "{{ messages }}",
        },
        {"source": "test"},
    )
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m")).eval()
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "m"))
    x = torch.tensor([tok.encode("hello #world")])
    with torch.no_grad():
        assert (m(x) - hf(x).logits).abs().max().item() <= 1e-4
    meta = json.loads((tmp_path / "m" / "roost.json").read_text())
    assert meta["source"] == "test" and len(meta["model_sha256"]) == 64
    assert json.loads((tmp_path / "m" / "generation_config.json").read_text())["eos_token_id"] == 0


def test_document_mask_isolates_packed_documents() -> None:
    m = _model()
    a, b = torch.randint(1, 1000, (1, 30)), torch.randint(1, 1000, (1, 20))
    packed = torch.cat([a, b], 1)
    doc = torch.tensor([[0] * 30 + [1] * 20])
    with torch.no_grad():
        masked = m(packed, doc_ids=doc)
        alone = m(b)
        unmasked = m(packed)
    # RoPE is relative, so document b sees exactly what it sees alone
    assert (masked[:, 30:] - alone).abs().max().item() < 1e-4
    assert (unmasked[:, 30:] - alone).abs().max().item() > 1e-3
    assert torch.allclose(masked[:, :30], unmasked[:, :30], atol=1e-5)


def test_kv_cache_decoding_equals_full_forward() -> None:
    m = _model()
    prompt = [5, 17, 99, 3, 250]
    out = generate(m, prompt, SamplingParams(max_tokens=15, temperature=0), stop_ids=set())
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(15):
            seq.append(int(m(torch.tensor([seq]))[0, -1].argmax()))
    assert out == seq[len(prompt) :]
    a = generate(m, prompt, SamplingParams(max_tokens=10, seed=3), set())
    assert a == generate(m, prompt, SamplingParams(max_tokens=10, seed=3), set())


@pytest.mark.parametrize("name", presets())
def test_parameter_count_matches_the_built_model(name: str) -> None:
    cfg = load_preset(name)
    with torch.device("meta"):
        m = Llama(cfg)
    assert cfg.num_params() == sum(p.numel() for p in m.parameters())


def test_flops_per_token_matches_torch_flop_counter() -> None:
    cfg = load_preset("tiny", vocab_size=512, max_seq_len=128)
    m = Llama(cfg)
    x = torch.randint(0, 512, (2, 128))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # the math backend spells attention out as matmuls, which the counter sees (the fused CPU kernel it does not)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        m(x, x).backward()
    measured = fc.get_total_flops() / x.numel()
    assert measured == pytest.approx(cfg.flops_per_token(128), rel=0.02)


def test_presets_and_depth_dial() -> None:
    assert {"tiny", "small", "gpt2-124m", "smollm2-135m", "llama3-8b", "llama3-70b", "llama3-405b"} <= set(presets())
    assert 8.0e9 < load_preset("llama3-8b").num_params() < 8.1e9
    assert 70.5e9 < load_preset("llama3-70b").num_params() < 70.6e9
    assert 134e6 < load_preset("smollm2-135m").num_params() < 135e6
    prev = None
    for d in (2, 4, 8, 12, 20):
        cfg, lr = from_depth(d)
        assert cfg.dim == 64 * d and cfg.n_layers == d and cfg.head_dim == 64 and cfg.n_heads % cfg.n_kv_heads == 0
        if prev:
            assert cfg.num_params() > prev[0].num_params() and lr < prev[1]
        prev = (cfg, lr)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"dim": 100, "n_heads": 3}, "do not divide dim"),
        ({"n_heads": 4, "n_kv_heads": 3}, "must divide n_heads"),
        ({"head_dim": 7}, "even"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"rope_scaling": {"factor": 8.0}}, "rope_scaling is missing"),
    ],
)
def test_config_errors(bad: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        ModelConfig(**{"dim": 64, "n_heads": 4, **bad})


@pytest.mark.parametrize("vocab,rows", [(1000, 300), (40_000, 700)])
def test_fused_head_loss_matches_cross_entropy(vocab: int, rows: int) -> None:
    import torch.nn.functional as F

    from roost.model.llama import linear_cross_entropy

    torch.manual_seed(0)
    h = torch.randn(rows, 48, requires_grad=True)
    w = (torch.randn(vocab, 48) * 0.1).requires_grad_()
    t = torch.randint(0, vocab, (rows,))
    t[::5] = -100
    ours = linear_cross_entropy(h, w, t)
    gh, gw = torch.autograd.grad(ours, (h, w))
    ref = F.cross_entropy(h @ w.T, t)
    rh, rw = torch.autograd.grad(ref, (h, w))
    assert abs(ours.item() - ref.item()) < 1e-5
    assert torch.allclose(gh, rh, atol=1e-7) and torch.allclose(gw, rw, atol=1e-7)
    with torch.no_grad():  # eval: loss only
        assert abs(linear_cross_entropy(h, w, t).item() - ref.item()) < 1e-5
