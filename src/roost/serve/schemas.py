"""The API contract of `roost serve`: pydantic models for the OpenAI-compatible endpoints and roost's own
(`/v1/compose`, `/v1/reply`). FastAPI generates the OpenAPI spec (`/openapi.json`) from these.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TOKENS_CAP = 4096


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, le=1000)
    min_p: float = Field(default=0.0, ge=0, le=1)
    repetition_penalty: float = Field(default=1.0, gt=0, le=10)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = Field(default=None, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: int = Field(default=1, ge=1, le=8)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] = Field(max_length=100_000)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)


class ComposeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=2000, description="What the post is about, or a draft to improve.")
    n: int = Field(default=3, ge=1, le=8)
    max_chars: int = Field(default=280, ge=20, le=5000)
    temperature: float = Field(default=0.9, ge=0, le=2)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    model: str | None = None


class ReplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    post_id: str | None = Field(default=None, max_length=300, description="A post in the store, e.g. x:123.")
    text: str | None = Field(default=None, max_length=5000, description="Or the text of the post to reply to.")
    n: int = Field(default=3, ge=1, le=8)
    max_chars: int = Field(default=280, ge=20, le=5000)
    temperature: float = Field(default=0.9, ge=0, le=2)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    model: str | None = None


class Candidate(BaseModel):
    text: str
    chars: int
    ai_generated: bool = True
    model: str
    model_sha256: str


class SuggestResponse(BaseModel):
    object: Literal["roost.suggestions"] = "roost.suggestions"
    candidates: list[Candidate]
    dropped: dict[str, int]
    ai_generated: bool = True
    model: str
    model_sha256: str


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "roost"
    model_sha256: str
    context_length: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- search (`/v1/search`, `/v1/posts`, `/v1/ask`) ----------------------------------------------------------------
class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(
        min_length=1,
        max_length=1000,
        description='Words, "phrases", -exclusions, OR, #tags, from:, to:, since:, until:, lang:, filter:replies.',
    )
    mode: Literal["keyword", "semantic", "hybrid"] = "hybrid"
    k: int = Field(default=10, ge=1, le=100)
    recency: float = Field(default=0.0, ge=0, le=10, description="Boost for recent posts (0 = off).")
    expand: bool | None = Field(default=None, description="LLM query expansion (needs a served model).")


class SearchHit(BaseModel):
    id: str
    author: str
    created_at: str
    text: str
    score: float
    keyword_rank: int | None = None
    semantic_rank: int | None = None
    similarity: float | None = None


class SearchResponse(BaseModel):
    object: Literal["search.result"] = "search.result"
    query: str
    mode: str
    expanded_terms: list[str] = []
    data: list[SearchHit]


class PostIn(BaseModel):
    """One post, as a network sends it the moment it is published."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        min_length=1, max_length=300, description="Unique id; stored as 'api:ID' (API posts have their own namespace)."
    )
    author: str = Field(min_length=1, max_length=300)
    text: str = Field(max_length=20_000)
    created_at: str = Field(min_length=1, max_length=64, description="ISO 8601, e.g. 2024-05-01T12:00:00Z.")
    lang: str | None = Field(default=None, max_length=16)
    reply_to: str | None = Field(default=None, max_length=300)


class PostsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    posts: list[PostIn] = Field(min_length=1, max_length=1000)
    wait: bool = Field(default=True, description="Answer once the posts are searchable (≤ 1 s).")


class PostsResponse(BaseModel):
    object: Literal["posts.ingest"] = "posts.ingest"
    stored: int
    already: int
    forgotten: int
    duplicates: int
    rejected: list[dict[str, Any]]
    searchable: bool
    seconds: float


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question: str = Field(min_length=1, max_length=1000)
    query: str | None = Field(default=None, max_length=1000, description="Search query (default: the question).")
    model: str | None = Field(default=None, max_length=200)
    posts: int = Field(default=5, ge=1, le=20, description="Retrieved posts the model reads.")
    stream: bool = False


class CitedPost(BaseModel):
    n: int
    id: str
    author: str
    created_at: str
    snippet: str
    score: float


class AnswerSentence(BaseModel):
    text: str
    citations: list[str]
    support: float = Field(description="Share of the sentence's content words found in the cited post.")


class AskResponse(BaseModel):
    object: Literal["ask.answer"] = "ask.answer"
    answer: str
    answered: bool
    abstained: bool
    sentences: list[AnswerSentence]
    cited_posts: list[CitedPost]
    retrieved_posts: list[CitedPost]
    dropped_sentences: int
    ai_generated: bool
    model: str
    model_sha256: str
