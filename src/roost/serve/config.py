"""What `roost serve` is asked for: one `ServeConfig`, from the flags (`roost serve --help`, with `roost.toml`'s
`[serve]` upstreams), or a script's values. The launcher (roost.serve.launch) reads what to load, the app
(roost.serve.app) the key and body limits, the HTTP server (roost.serve.http) the header timeout and connections.

    build(Roost.at(home), ServeConfig(model="smollm2", port=8000), say=print)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from roost.serve.http import WRITE_TIMEOUT


@dataclass
class ServeConfig:
    model: str | None = None  # models/NAME or a model folder; None: serve search only
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # the flag's; `launch.build` puts the key in force ($ROOST_API_KEY too)
    max_batch: int = 8
    max_queue: int = 32
    max_seq: int = 2048
    dtype: str = "auto"  # weights for decoding: auto (roost.probe's table, by CPU class), bf16 or fp32
    quant: str | None = None
    no_search: bool = False
    header_timeout: float = 10.0  # request headers must be complete within this (the connection is closed)
    body_timeout: float = 30.0  # the whole request body must arrive within this (408)
    max_connections: int = 256  # open connections; more are answered 503 and closed
    upstreams: list[str] = field(default_factory=list)  # OpenAI-compatible servers generating for the model
    upstream_sha256: str | None = None
    vllm: int = 0  # start this many vLLM replicas on the model folder and use them as upstreams
    vllm_python: str | None = None
    max_body_bytes: int = 1 << 20
    write_timeout: float = WRITE_TIMEOUT  # an answer making no progress this long ends its connection
