"""A tiny real model (random weights, the test tokenizer) served by the real app on a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import uvicorn

from roost.data import tokenizer as toklib
from roost.infer.engine import Engine
from roost.infer.guard import LeakGuard
from roost.model.config import load_preset
from roost.model.convert import load_model_dir, save_model_dir
from roost.model.llama import Llama
from roost.serve.app import ServeConfig, build_app
from roost.serve.http import uvicorn_options
from tests.data.conftest import store_db, tok_path  # noqa: F401

TOKCONF = {
    "bos_token": toklib.BOS,
    "eos_token": toklib.EOS,
    "pad_token": toklib.PAD,
    "chat_template": toklib.CHAT_TEMPLATE,
}


@pytest.fixture(scope="session")
def model_dir(tok_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    torch.manual_seed(0)
    m = Llama(load_preset("tiny", max_seq_len=512))
    m.init_weights(3)
    out = tmp_path_factory.mktemp("models") / "tiny"
    save_model_dir(m, out, tok_path, TOKCONF, {"source": "test"})
    return out


def make_engine(model_dir: Path, **kw: Any) -> Engine:
    m, _ = load_model_dir(model_dir)
    tok = toklib.load(model_dir / "tokenizer.json")
    return Engine(m, tok, {tok.token_to_id(toklib.EOS), tok.token_to_id(toklib.IM_END)}, max_seq=512, **kw)


class Server:
    def __init__(self, app: Any, **limits: Any):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, **uvicorn_options(**limits)))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(
    model_dir: Path, store: Path | None = None, engine_kw: dict[str, Any] | None = None, **cfg: Any
) -> tuple[Server, Engine, Any]:
    engine = make_engine(model_dir, **(engine_kw or {}))
    guard = LeakGuard(store) if store else None
    meta_sha = load_model_dir(model_dir)[1]["model_sha256"]
    conf = ServeConfig(**cfg)
    app = build_app(engine, "tiny", meta_sha, conf, guard, store)
    return Server(app, header_timeout=conf.header_timeout, max_connections=conf.max_connections), engine, app


@pytest.fixture(scope="module")
def server(model_dir: Path, store_db: Path) -> Iterator[Server]:  # noqa: F811
    srv, engine, _ = serve(model_dir, store_db)
    yield srv
    srv.stop()
    engine.shutdown()
