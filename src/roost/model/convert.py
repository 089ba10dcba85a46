"""Checkpoints in and out: HF Llama directories (config.json + safetensors) both ways, and GGUF files of the llama
architecture in (dequantised with the `gguf` package, tokenizer rebuilt from the GGUF vocabulary and merges).

`roost import PATH --name NAME` and `roost export models/NAME OUT` call these; weights from outside are read as
safetensors or GGUF only (nothing is unpickled).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roost.errors import RoostError, UsageError
from roost.hashing import sha256_file
from roost.model.config import ModelConfig, check_size, from_dict
from roost.model.llama import Llama
from roost.model.shapes import check_shapes, config_from_hf, read_json
from roost.workspace import replace_dir, temp_dir_for

# -- HF config ---------------------------------------------------------------------------------------------------


def hf_config(cfg: ModelConfig, bos_id: int | None, eos_id: int | None, pad_id: int | None) -> dict[str, Any]:
    if cfg.qk_norm:
        raise RoostError("a model with QK-norm has no LlamaForCausalLM equivalent; export needs qk_norm = false")
    out: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": cfg.attention_bias,
        "mlp_bias": False,
        "hidden_act": "silu",
        "initializer_range": cfg.init_std,
        "torch_dtype": "float32",
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "use_cache": True,
    }
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling:
        out["rope_scaling"] = {"rope_type": "llama3", **cfg.rope_scaling}
        rope = {**out["rope_scaling"], "rope_theta": cfg.rope_theta}
    out["rope_parameters"] = rope  # transformers >= 5 reads this; older versions read rope_theta/rope_scaling
    return out


# -- state dicts -------------------------------------------------------------------------------------------------


def hf_state_dict(model: Llama) -> dict[str, torch.Tensor]:
    """roost parameter names are HF's; a tied head is left out (HF re-ties it from the embedding)."""
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        sd.pop("lm_head.weight", None)
    return sd


def load_hf_weights(model: Llama, tensors: dict[str, torch.Tensor], where: str) -> None:
    tensors = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}
    if model.config.tie_embeddings:
        tensors.pop("lm_head.weight", None)
    want = {
        k: v.shape for k, v in model.state_dict().items() if not (model.config.tie_embeddings and k == "lm_head.weight")
    }
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    if missing or extra:
        raise RoostError(f"{where}: weights do not fit the config (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(want[k]):
            raise RoostError(f"{where}: {k} has shape {tuple(v.shape)}, the config needs {tuple(want[k])}")
    model.load_state_dict(tensors, strict=False)


def load_hf_dir(path: Path) -> tuple[Llama, ModelConfig]:
    """A HF Llama directory: config.json + model.safetensors (or sharded with model.safetensors.index.json).
    The config's sizes are checked against their caps and against the safetensors headers before anything is
    built or read (see `check_shapes`)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise RoostError(f"{path}: no config.json (not a HF model directory)")
    cfg = config_from_hf(read_json(cfg_path), str(cfg_path))
    files = sorted(path.glob("*.safetensors"))
    if not files:
        bins = list(path.glob("*.bin")) + list(path.glob("*.pt"))
        raise RoostError(
            f"{path}: no .safetensors weights"
            + (" (pickled .bin/.pt files are never loaded: convert them to safetensors first)" if bins else "")
        )
    shapes: dict[str, tuple[int, ...]] = {}
    names: dict[str, str] = {}
    for f in files:
        try:
            with safe_open(str(f), "pt") as sf:  # the header only: no tensor is read
                for k in sf.keys():
                    shapes[k], names[k] = tuple(sf.get_slice(k).get_shape()), f"{k} ({f.name})"
        except Exception as e:  # noqa: BLE001 — safetensors raises SafetensorError on truncation / bad headers
            raise RoostError(f"{f}: unreadable safetensors file ({str(e)[:200]})") from None
    check_shapes(cfg, shapes, str(cfg_path), names)
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except Exception as e:  # noqa: BLE001
            raise RoostError(f"{f}: unreadable safetensors file ({str(e)[:200]})") from None
    model = Llama(cfg)
    load_hf_weights(model, {k: v.float() for k, v in tensors.items()}, str(path))
    return model, cfg


# -- GGUF --------------------------------------------------------------------------------------------------------

_GGUF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp stores Q/K rows interleaved per head (Meta's rotary layout); HF/roost use rotate-half."""
    out = w.shape[0]
    return w.reshape(heads, out // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


# GGUF metadata key → ModelConfig size field (each checked against its cap under the key's name)
GGUF_SIZES = {
    "llama.attention.head_count": "n_heads",
    "llama.attention.head_count_kv": "n_kv_heads",
    "llama.embedding_length": "dim",
    "llama.block_count": "n_layers",
    "llama.feed_forward_length": "ffn_dim",
    "llama.context_length": "max_seq_len",
    "llama.vocab_size": "vocab_size",
    "llama.rope.dimension_count": "head_dim",
}


def _gguf_config(reader: Any, path: Path) -> ModelConfig:
    """The config a GGUF's metadata declares, every size within its cap; RoostError naming the key otherwise."""
    try:
        sizes = {ours: check_size(ours, _field(reader, key), key) for key, ours in GGUF_SIZES.items()
                 if reader.fields.get(key) is not None}  # fmt: skip
        for key, ours in GGUF_SIZES.items():
            if ours in ("n_heads", "dim", "n_layers", "ffn_dim") and ours not in sizes:
                raise RoostError(f"{path}: GGUF metadata {key} is missing")
        if "vocab_size" not in sizes:
            sizes["vocab_size"] = check_size("vocab_size", len(_field(reader, "tokenizer.ggml.tokens") or []))
        names = {t.name for t in reader.tensors}
        return from_dict(
            {
                "name": str(_field(reader, "general.name", path.stem))[:200],
                **sizes,
                "head_dim": sizes.get("head_dim", sizes["dim"] // sizes["n_heads"]),
                "max_seq_len": sizes.get("max_seq_len", 2048),
                "rope_theta": float(_field(reader, "llama.rope.freq_base", 10_000.0)),
                "norm_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
                "tie_embeddings": "output.weight" not in names,
            },
            str(path),
        )
    except UsageError as e:
        raise RoostError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from None
    except (TypeError, ValueError, AttributeError, IndexError) as e:
        raise RoostError(f"{path}: bad GGUF metadata ({type(e).__name__}: {str(e)[:200]})") from None


def _gguf_hf_name(name: str, path: Path) -> str | None:
    """The HF name of a GGUF tensor (None: rope_freqs, recomputed from the config); RoostError for others."""
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _GGUF_NAMES:
        return f"model.layers.{int(parts[1])}.{_GGUF_NAMES[parts[2]]}.weight"
    if name in _GGUF_NAMES:
        return _GGUF_NAMES[name]
    if name == "rope_freqs.weight":
        return None  # llama3 scaling factors, recomputed from the config
    raise RoostError(f"{path}: tensor {name[:100]} is not part of a llama model roost knows")


def read_gguf(path: Path) -> tuple[Llama, ModelConfig, dict[str, Any]]:
    """Dequantise a llama-architecture GGUF into a roost model; returns (model, config, GGUF metadata). The
    metadata's sizes are checked against their caps and the tensor infos before anything is dequantised."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 — a truncated or foreign file fails in numpy memmap / header parsing
        raise RoostError(f"{path}: not a readable GGUF file ({str(e)[:200]})") from None
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise RoostError(f"{path}: GGUF architecture {str(arch)[:40]!r}; roost imports 'llama' only")
    cfg = _gguf_config(reader, path)
    hf = {t.name: _gguf_hf_name(t.name, path) for t in reader.tensors}
    shapes: dict[str, tuple[int, ...]] = {}
    names: dict[str, str] = {}
    for t in reader.tensors:
        name = hf[t.name]
        if name is not None:
            shapes[name], names[name] = tuple(int(x) for x in reversed(t.shape)), t.name
    check_shapes(cfg, shapes, str(path), names)
    tensors: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        name = hf[t.name]
        if name is None:
            continue
        arr = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        arr = arr.reshape([int(x) for x in reversed(t.shape)])
        if name.endswith("q_proj.weight"):
            arr = _unpermute(arr, cfg.n_heads)
        elif name.endswith("k_proj.weight"):
            arr = _unpermute(arr, cfg.n_kv_heads)
        tensors[name] = torch.from_numpy(np.ascontiguousarray(arr))
    model = Llama(cfg)
    load_hf_weights(model, tensors, str(path))
    meta = {
        k: _field(reader, k)
        for k in (
            "general.name",
            "general.organization",
            "general.license",
            "general.file_type",
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
        )
    }
    return model, cfg, meta


def gguf_tokenizer(path: Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild a HF `tokenizers` byte-level BPE from a GGUF's vocabulary, merges and special tokens; returns the
    tokenizer and its tokenizer_config.json fields (special tokens, chat template)."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    reader = gguf.GGUFReader(str(path))
    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise RoostError(f"{path}: GGUF tokenizer model {kind!r}; roost rebuilds byte-level BPE ('gpt2') only")
    tokens: list[str] = _field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    types = _field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "llama-bpe", "llama3"):
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types, strict=False) if ty == 3]
    tok.add_special_tokens(specials)

    def tid(key: str) -> str | None:
        i = _field(reader, key)
        return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

    extra = {
        "bos_token": tid("tokenizer.ggml.bos_token_id"),
        "eos_token": tid("tokenizer.ggml.eos_token_id"),
        "pad_token": tid("tokenizer.ggml.padding_token_id"),
        "unk_token": tid("tokenizer.ggml.unknown_token_id"),
        "chat_template": _field(reader, "tokenizer.chat_template"),
    }
    return tok, extra


# -- the models/<name>/ directory ----------------------------------------------------------------------------------


def save_model_dir(
    model: Llama, out: Path, tokenizer_json: Path | Any, tokenizer_config: dict[str, Any], provenance: dict[str, Any]
) -> dict[str, Any]:
    """Write a HF Llama directory that `AutoModelForCausalLM.from_pretrained(out)` loads as it is, plus roost.json.
    `tokenizer_json` is a path to copy or a `tokenizers.Tokenizer` to save. Written to a temp dir, then renamed."""
    return save_weights_dir(model.config, [hf_state_dict(model)], out, tokenizer_json, tokenizer_config, provenance)


def save_weights_dir(
    cfg: ModelConfig,
    groups: Iterable[dict[str, torch.Tensor]],
    out: Path,
    tokenizer_json: Path | Any,
    tokenizer_config: dict[str, Any],
    provenance: dict[str, Any],
    n_groups: int = 1,
) -> dict[str, Any]:
    """`save_model_dir` from groups of HF-named tensors, one safetensors file per group (HF's sharded layout with
    model.safetensors.index.json when there are several), so a large model is written without ever being whole in
    memory. `model_sha256` is the file's sha256, or for shards the sha256 of their sha256s in order."""
    import shutil

    from safetensors.torch import save_file

    tmp = temp_dir_for(out)
    if isinstance(tokenizer_json, Path):
        shutil.copyfile(tokenizer_json, tmp / "tokenizer.json")
    else:
        tokenizer_json.save(str(tmp / "tokenizer.json"))
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp / "tokenizer.json"))

    def tid(key: str) -> int | None:
        t = tokenizer_config.get(key)
        return tok.token_to_id(t) if t else None

    bos, eos, pad = tid("bos_token"), tid("eos_token"), tid("pad_token")
    (tmp / "config.json").write_text(json.dumps(hf_config(cfg, bos, eos, pad), indent=2))
    weight_map: dict[str, str] = {}
    shas = []
    total = 0
    for i, group in enumerate(groups):
        name = "model.safetensors" if n_groups == 1 else f"model-{i + 1:05d}-of-{n_groups:05d}.safetensors"
        if cfg.tie_embeddings:
            group = {k: v for k, v in group.items() if k != "lm_head.weight"}
        save_file({k: v.contiguous() for k, v in group.items()}, str(tmp / name), metadata={"format": "pt"})
        weight_map |= {k: name for k in group}
        total += sum(v.numel() * v.element_size() for v in group.values())
        shas.append(sha256_file(tmp / name))
    if n_groups > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    model_sha = _combine(shas)
    tc = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "model_max_length": cfg.max_seq_len,
        **tokenizer_config,
    }
    (tmp / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    (tmp / "special_tokens_map.json").write_text(
        json.dumps({k: v for k, v in tokenizer_config.items() if k.endswith("_token") and v}, indent=2)
    )
    gen = {
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "do_sample": True,
        "temperature": 0.8,
        "top_p": 0.95,
        "max_new_tokens": 80,
    }
    (tmp / "generation_config.json").write_text(json.dumps({k: v for k, v in gen.items() if v is not None}, indent=2))
    meta = {
        **provenance,
        "model_sha256": model_sha,
        "tokenizer_sha256": sha256_file(tmp / "tokenizer.json"),
        "roost_config": cfg.to_dict(),
        "params": cfg.num_params(),
    }
    (tmp / "roost.json").write_text(json.dumps(meta, indent=2))
    replace_dir(tmp, out)
    return meta


def load_model_dir(path: Path) -> tuple[Llama, dict[str, Any]]:
    """A models/<name>/ directory (or any HF Llama directory): the model in fp32 and its roost.json (or {})."""
    model, _ = load_hf_dir(path)
    meta_path = path / "roost.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    return model, meta if isinstance(meta, dict) else {}


def _combine(shas: list[str]) -> str:
    return shas[0] if len(shas) == 1 else hashlib.sha256("".join(shas).encode()).hexdigest()


def weights_sha256(path: Path) -> str | None:
    """The model sha256 roost records for a model folder, computed from its safetensors files as they are now
    (one file: its sha256; HF shards: the sha256 of their sha256s in order); None when it has none."""
    single = path / "model.safetensors"
    files = [single] if single.is_file() else sorted(path.glob("model-*-of-*.safetensors"))
    return _combine([sha256_file(f) for f in files]) if files else None
