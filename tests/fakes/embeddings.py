"""A loopback fake of the OpenAI and Gemini embeddings endpoints, in their wire formats.

    with EmbeddingsFake() as fake:
        OpenAI(base_url=fake.openai_url, ...).embeddings.create(model="m", input=["hi"])

Vectors are deterministic functions of the text (so tests can compare them); `fail_next` makes
the next call answer with a vendor error status and body.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["EmbeddingsFake", "fake_vector"]


def fake_vector(text: str, dimension: int) -> list[float]:
    """Deterministic, not normalised (the embedders must normalise)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [float(digest[i % len(digest)]) - 127.5 for i in range(dimension)]


class EmbeddingsFake:
    """Serves `POST /v1/embeddings` (OpenAI) and `POST /v1beta/models/{m}:batchEmbedContents` (Gemini)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_next: tuple[int, dict[str, Any]] | None = None
        app = Starlette(routes=[Route("/v1/embeddings", self._openai, methods=["POST"]),
                                Route("/{version}/models/{model}:batchEmbedContents", self._gemini,
                                      methods=["POST"])])
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off", access_log=False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def gemini_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> EmbeddingsFake:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(5)

    def _failure(self) -> JSONResponse | None:
        if self.fail_next is None:
            return None
        status, body = self.fail_next
        self.fail_next = None
        return JSONResponse(body, status_code=status)

    async def _openai(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append({"vendor": "openai", "body": body, "auth": request.headers.get("authorization")})
        failed = self._failure()
        if failed is not None:
            return failed
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dim = int(body.get("dimensions", 8))
        # listed in reverse: clients must order by `index`
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(t, dim)} for i, t in enumerate(texts)]
        return JSONResponse({"object": "list", "data": data[::-1], "model": body["model"],
                             "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)}})

    async def _gemini(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append({"vendor": "gemini", "body": body, "path": request.url.path,
                              "key": request.headers.get("x-goog-api-key")})
        failed = self._failure()
        if failed is not None:
            return failed
        out = []
        for req in body["requests"]:
            text = "".join(p.get("text", "") for p in req["content"]["parts"])
            out.append({"values": fake_vector(text, int(req.get("outputDimensionality", 8)))})
        return JSONResponse({"embeddings": out})
