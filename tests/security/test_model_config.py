"""A model folder or GGUF from elsewhere declares its sizes; roost checks them before it builds anything: each
size within the caps of `roost.model.config` (MAX_VOCAB, MAX_DIM, ...), then every tensor the config implies
against the weights' own header (safetensors header, GGUF tensor info; no tensor is read). A failure is one
RoostError naming the file and the field or tensor; the CLI prints it without a traceback.

Attacks and outcomes:
- issue 24 #9: a 219-byte config.json (hidden 16384, 128 layers, vocabulary 128,256) next to a tiny safetensors
  file exhausted memory on `roost import` (the model was built from the declared sizes first). Now refused in
  seconds, naming config.json and a tensor it lacks, in bounded memory, under `roost import DIR` and
  `roost generate` of a models/NAME folder (`test_hostile_config_*`; the child runs under a 6 GiB address-space
  cap so that a regression fails instead of swapping the machine).
- sizes over the caps, zero or negative, not integers, a config that is not an object, rope scaling that is not
  numbers: a RoostError naming config.json and the field (`test_bad_config_field_is_named`).
- a config whose sizes disagree with the weights (a wider FFN than the tensors): a RoostError naming the tensor
  and both shapes (`test_config_disagreeing_with_weights_names_the_tensor`); the same for GGUF metadata
  (`test_hostile_gguf_is_refused_before_dequantising`).
- every shipped preset, llama3-405b included, is within the caps (`test_presets_within_caps`).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from roost.errors import RoostError
from roost.model import convert
from roost.model.config import ModelConfig, load_preset, presets
from roost.model.llama import Llama

HOSTILE = {  # ~200 bytes: the sizes of a 405b-class model, next to a few bytes of weights
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 16384,
    "intermediate_size": 53248,
    "num_hidden_layers": 128,
    "num_attention_heads": 128,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
}
AS_LIMIT = 6 << 30  # the child's address space: a model built from HOSTILE would need ~1000x this
TINY = ModelConfig(name="t", vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=64)


def hostile_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(HOSTILE, separators=(",", ":")))
    save_file({"model.embed_tokens.weight": torch.zeros(4, 4)}, str(root / "model.safetensors"))
    return root


def tiny_dir(root: Path, **config_overrides: object) -> Path:
    """A genuine tiny model (config.json + model.safetensors), with config fields overridden."""
    root.mkdir(parents=True, exist_ok=True)
    model = Llama(TINY)
    save_file(convert.hf_state_dict(model), str(root / "model.safetensors"))
    conf = {**convert.hf_config(TINY, None, None, None), **config_overrides}
    (root / "config.json").write_text(json.dumps(conf))
    return root


def roost_limited(home: Path, *args: str) -> tuple[int, str, float, int]:
    """The `roost` console script under an address-space cap: (exit code, output, seconds, peak RSS in bytes). The
    peak is the child's own (VmHWM of its image after exec, polled): rusage's maxrss also counts the pages of the
    test process it was forked from (2 GB and more late in a full suite)."""
    exe = Path(sys.executable).with_name("roost")
    out = home.parent / "out.txt"

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))

    t0 = time.monotonic()
    peak = 0
    with open(out, "wb") as fh:
        proc = subprocess.Popen([str(exe), "--home", str(home), *args], stdout=fh, stderr=fh, preexec_fn=cap)
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                break
            hwm = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")]
            peak = max([peak, *(int(v) * 1024 for v in hwm)])
            time.sleep(0.01)
        proc.wait()
    return proc.returncode, out.read_text(errors="replace"), time.monotonic() - t0, peak


def test_hostile_config_import_is_refused_quickly(tmp_path: Path) -> None:
    src = hostile_dir(tmp_path / "evil")
    assert (src / "config.json").stat().st_size < 256
    code, out, secs, rss = roost_limited(tmp_path / "home", "import", str(src), "--name", "evil")
    assert code != 0 and "Traceback" not in out, out[-3000:]
    assert "config.json" in out and "model.layers.0" in out, out
    assert secs < 30 and rss < 1536 << 20, (secs, rss >> 20)


def test_hostile_config_generate_from_models_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    hostile_dir(home / "models" / "evil")
    code, out, secs, rss = roost_limited(home, "generate", "evil", "hello")
    assert code != 0 and "Traceback" not in out, out[-3000:]
    assert "config.json" in out and "model.layers.0" in out, out
    assert secs < 30 and rss < 1536 << 20, (secs, rss >> 20)


BAD_FIELDS = {
    "vocab_size": 10**12,
    "hidden_size": 1 << 20,
    "num_hidden_layers": 10**6,
    "num_attention_heads": 0,
    "num_key_value_heads": -2,
    "head_dim": "wide",
    "intermediate_size": 1.5,
    "max_position_embeddings": 10**9,
    "rope_scaling": {"rope_type": "llama3", "factor": "x", "low_freq_factor": 1, "high_freq_factor": 4,
                     "original_max_position_embeddings": 8192},
}  # fmt: skip


@pytest.mark.parametrize("field", list(BAD_FIELDS))
def test_bad_config_field_is_named(tmp_path: Path, field: str) -> None:
    src = tiny_dir(tmp_path / "m", **{field: BAD_FIELDS[field]})
    with pytest.raises(RoostError) as e:
        convert.load_hf_dir(src)
    assert "config.json" in str(e.value) and field.split("_")[0] in str(e.value), str(e.value)


@pytest.mark.parametrize("text", ["[1, 2]", '"llama"', '{"model_type": "llama", "architectures": 7}', "[" * 100_000])
def test_config_that_is_not_an_object_is_named(tmp_path: Path, text: str) -> None:
    src = tiny_dir(tmp_path / "m")
    (src / "config.json").write_text(text)
    with pytest.raises(RoostError, match="config.json"):
        convert.load_hf_dir(src)


def test_config_disagreeing_with_weights_names_the_tensor(tmp_path: Path) -> None:
    src = tiny_dir(tmp_path / "m", intermediate_size=128)
    with pytest.raises(RoostError) as e:
        convert.load_hf_dir(src)
    msg = str(e.value)
    assert "config.json" in msg and "model.layers.0.mlp" in msg and "(64, 32)" in msg and "(128, 32)" in msg, msg
    model, cfg = convert.load_hf_dir(tiny_dir(tmp_path / "ok"))  # and the genuine folder still loads
    assert cfg.ffn_dim == 64 and model.state_dict()["model.layers.0.mlp.gate_proj.weight"].shape == (64, 32)


def test_hostile_gguf_is_refused_before_dequantising(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "evil.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(128)
    w.add_embedding_length(16384)
    w.add_feed_forward_length(53248)
    w.add_head_count(128)
    w.add_head_count_kv(8)
    w.add_context_length(8192)
    w.add_vocab_size(128256)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(RoostError) as e:
        convert.read_gguf(path)
    assert "evil.gguf" in str(e.value) and "token_embd.weight" in str(e.value), str(e.value)


def test_presets_within_caps() -> None:
    assert "llama3-405b" in presets()
    for name in presets():
        load_preset(name)  # the caps raise UsageError for any preset outside them


@pytest.mark.parametrize("extra", [{}, {"qk_norm": True, "attention_bias": True, "tie_embeddings": False}])
def test_expected_shapes_are_those_of_a_built_model(extra: dict) -> None:
    from roost.model.shapes import expected_shapes

    cfg = ModelConfig(vocab_size=10, dim=8, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=16, **extra)
    built = {k: tuple(v.shape) for k, v in Llama(cfg).state_dict().items()}
    if cfg.tie_embeddings:
        built.pop("lm_head.weight")
    assert list(expected_shapes(cfg).items()) == list(built.items())
