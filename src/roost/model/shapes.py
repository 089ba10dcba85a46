"""What a model from elsewhere declares, checked before anything is built: a HF config.json's sizes against the caps
of `roost.model.config`, then every tensor those sizes imply against the weights' own headers (safetensors header,
GGUF tensor info), read without loading a tensor. Used by `roost import`, `roost generate` and `roost serve`
through `roost.model.convert`; `check_shapes(cfg, {name: shape}, where, names)` raises RoostError naming the file
and the tensor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from roost.errors import RoostError, UsageError
from roost.model.config import ModelConfig, check_size, from_dict

# config.json's size fields → ModelConfig's (each checked against its cap under the name the file uses)
HF_SIZES = {
    "vocab_size": "vocab_size",
    "hidden_size": "dim",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_kv_heads",
    "head_dim": "head_dim",
    "intermediate_size": "ffn_dim",
    "max_position_embeddings": "max_seq_len",
}


def config_from_hf(c: Any, where: str) -> ModelConfig:
    """A ModelConfig from a HF config.json's contents; RoostError naming `where` and the field for anything off."""
    if not isinstance(c, dict):
        raise RoostError(f"{where}: expected a JSON object, got {type(c).__name__}")
    try:
        return _config_from_hf(c, where)
    except UsageError as e:
        raise RoostError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
    except KeyError as e:
        raise RoostError(f"{where}: missing field {e}") from None
    except (TypeError, ValueError, AttributeError, ArithmeticError) as e:
        raise RoostError(f"{where}: bad field ({type(e).__name__}: {str(e)[:200]})") from None


def _config_from_hf(c: dict[str, Any], where: str) -> ModelConfig:
    arch = c.get("model_type")
    archs = c.get("architectures")
    if arch not in ("llama", "mistral") and not (isinstance(archs, list) and "LlamaForCausalLM" in archs):
        raise RoostError(f"{where}: model_type {str(arch)[:40]!r} is not a Llama-family model roost can load")
    sizes = {ours: check_size(ours, c[hf], hf) for hf, ours in HF_SIZES.items() if c.get(hf) is not None}
    for need in ("vocab_size", "dim", "n_layers", "n_heads", "ffn_dim"):
        if need not in sizes:
            raise KeyError(next(hf for hf, ours in HF_SIZES.items() if ours == need))
    rope = c.get("rope_parameters") or {}
    scaling = c.get("rope_scaling") or (rope if isinstance(rope, dict) and rope.get("rope_type") == "llama3" else None)
    if not isinstance(rope, dict) or not isinstance(scaling, (dict, type(None))):
        raise UsageError("rope_parameters and rope_scaling must be objects")
    kind = scaling.get("rope_type", scaling.get("type")) if scaling else None
    if kind not in (None, "llama3", "default"):
        raise RoostError(f"{where}: rope scaling {str(kind)[:40]!r} is not supported (only llama3)")
    if scaling and kind != "default":
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        scaling = {k: scaling[k] for k in keys}
    else:
        scaling = None
    heads = sizes["n_heads"]
    return from_dict(
        {
            "name": str(c.get("_name_or_path") or "imported")[:200],
            **sizes,
            "n_kv_heads": sizes.get("n_kv_heads", heads),
            "head_dim": sizes.get("head_dim", sizes["dim"] // heads),
            "max_seq_len": sizes.get("max_seq_len", 2048),
            "rope_theta": float(c.get("rope_theta") or rope.get("rope_theta", 10_000.0)),
            "rope_scaling": scaling,
            "norm_eps": float(c.get("rms_norm_eps", 1e-5)),
            "tie_embeddings": bool(c.get("tie_word_embeddings", False)),
            "attention_bias": bool(c.get("attention_bias", False)),
        },
        where,
    )


def read_json(path: Path) -> Any:
    """A JSON file from a model folder; RoostError naming it when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RoostError(f"{path}: not readable JSON ({type(e).__name__}: {str(e)[:200]})") from None


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The HF-named tensors a `Llama(cfg)` holds, with their shapes (a tied head left out), computed from the config
    alone: nothing is allocated (tests/security/test_model_config.py checks it against built models)."""
    d, hd, v, f = cfg.dim, cfg.head_dim, cfg.vocab_size, cfg.ffn_dim
    q, kv = cfg.n_heads * hd, cfg.n_kv_heads * hd
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, d)}
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = (d,)
        for name, rows, cols in (("q", q, d), ("k", kv, d), ("v", kv, d), ("o", d, q)):
            out[f"{p}self_attn.{name}_proj.weight"] = (rows, cols)
            if cfg.attention_bias:
                out[f"{p}self_attn.{name}_proj.bias"] = (rows,)
        if cfg.qk_norm:
            out[p + "self_attn.q_norm.weight"] = out[p + "self_attn.k_norm.weight"] = (hd,)
        out[p + "post_attention_layernorm.weight"] = (d,)
        out |= {
            p + "mlp.gate_proj.weight": (f, d),
            p + "mlp.up_proj.weight": (f, d),
            p + "mlp.down_proj.weight": (d, f),
        }
    out["model.norm.weight"] = (d,)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = (v, d)
    return out


def check_shapes(cfg: ModelConfig, found: dict[str, tuple[int, ...]], where: str, names: dict[str, str]) -> None:
    """RoostError unless the weights (HF name → shape, read from headers) are exactly the tensors `cfg` implies.
    `names` gives each HF name as the file spells it, for the message."""
    found = {k: v for k, v in found.items() if not k.endswith("rotary_emb.inv_freq")}
    if cfg.tie_embeddings:
        found.pop("lm_head.weight", None)
    want = expected_shapes(cfg)
    problems = [
        f"{names.get(k, k)} has shape {found[k]}, the config declares {want[k]}"
        for k in want
        if k in found and tuple(found[k]) != want[k]
    ][:3]
    missing = [k for k in want if k not in found]
    extra = sorted(names.get(k, k) for k in set(found) - set(want))
    if missing:
        problems.append(f"{len(missing)} tensor(s) the config declares are missing ({', '.join(missing[:3])})")
    if extra:
        problems.append(f"{len(extra)} tensor(s) are not in a model of this config ({', '.join(extra[:3])})")
    if problems:
        raise RoostError(f"{where}: the weights do not fit the config: " + "; ".join(problems))
