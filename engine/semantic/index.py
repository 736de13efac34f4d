"""Nearest-neighbour indexes over unit vectors: exact brute force (numpy) and HNSW (usearch).

`ScopeIndex` holds the vectors of one cache scope and picks its implementation: exact search
until `ann_from` vectors (at that size a matrix-vector product is still well under a millisecond,
see benchmarks/RESULTS.md), then an approximate usearch index built from the same vectors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from engine.semantic.embedders import EmbedderError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["ScopeIndex"]


class ScopeIndex:
    """Vectors keyed by integer ids; `search` returns the best (id, cosine) pairs.

    Args:
        dimension: vector length.
        kind: `exact`, `ann` or `auto` (exact until `ann_from` vectors, then ANN).
        ann_from: size at which `auto` switches.
    """

    def __init__(self, dimension: int, *, kind: Literal["auto", "exact", "ann"] = "auto",
                 ann_from: int = 10_000) -> None:
        import numpy as np

        self.dimension = dimension
        self._kind = kind
        self._ann_from = ann_from
        # exact: rows [0, _n) of _mat are live or tombstoned (id -1); grown by doubling
        self._mat: npt.NDArray[np.float32] = np.zeros((16, dimension), dtype=np.float32)
        self._ids: npt.NDArray[np.int64] = np.full(16, -1, dtype=np.int64)
        self._n = 0
        self._row: dict[int, int] = {}  # id -> row
        self._ann: Any = None  # usearch Index once switched
        if kind == "ann":
            self._ann = self._new_ann()

    def __len__(self) -> int:
        return len(self._row) if self._ann is None else int(len(self._ann))

    @property
    def kind(self) -> str:
        """`exact` or `ann`: what serves searches now."""
        return "exact" if self._ann is None else "ann"

    def _new_ann(self) -> Any:
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is not None:
            # usearch 2.x loaded before onnxruntime makes onnxruntime's import crash the process
            # (a native library clash; the other order is fine), and the bundled embedder may load later
            import onnxruntime  # noqa: F401
        try:
            from usearch.index import Index
        except ImportError as e:
            raise EmbedderError("the ANN index needs usearch: pip install 'llm-policy-router[semantic]'") from e
        return Index(ndim=self.dimension, metric="ip", dtype="f32", connectivity=16, expansion_add=128,
                     expansion_search=64)

    def add(self, ident: int, vector: npt.NDArray[np.float32]) -> None:
        """Add one unit vector under `ident` (ids are never reused)."""
        import numpy as np

        if self._ann is not None:
            self._ann.add(ident, vector)
            return
        if self._n == len(self._ids):
            grow = len(self._ids)
            self._mat = np.vstack([self._mat, np.zeros((grow, self.dimension), dtype=np.float32)])
            self._ids = np.concatenate([self._ids, np.full(grow, -1, dtype=np.int64)])
        self._mat[self._n] = vector
        self._ids[self._n] = ident
        self._row[ident] = self._n
        self._n += 1
        if self._kind == "auto" and len(self._row) >= self._ann_from:
            self._switch()

    def _switch(self) -> None:
        ann = self._new_ann()
        live = self._ids[: self._n] >= 0
        ann.add(self._ids[: self._n][live], self._mat[: self._n][live])
        self._ann = ann
        self._row.clear()

    def remove(self, ident: int) -> None:
        """Forget `ident` (no-op when absent)."""
        if self._ann is not None:
            if ident in self._ann:
                self._ann.remove(ident)
            return
        row = self._row.pop(ident, None)
        if row is not None:
            self._ids[row] = -1
            self._mat[row] = 0.0
            if self._n > 64 and len(self._row) < self._n // 2:
                self._compact()

    def _compact(self) -> None:
        live = self._ids[: self._n] >= 0
        mat, ids = self._mat[: self._n][live], self._ids[: self._n][live]
        self._n = len(ids)
        self._mat[: self._n], self._ids[: self._n] = mat, ids
        self._ids[self._n:] = -1
        self._row = {int(i): r for r, i in enumerate(ids)}

    def search(self, query: npt.NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        """Up to `k` (id, cosine) pairs, best first."""
        import numpy as np

        if self._ann is not None:
            if len(self._ann) == 0:
                return []
            found = self._ann.search(query, k)
            # usearch's "ip" distance is 1 - dot product
            return [(int(key), float(1.0 - dist)) for key, dist in zip(found.keys, found.distances, strict=True)]
        if not self._row:
            return []
        sims = self._mat[: self._n] @ query
        sims[self._ids[: self._n] < 0] = -2.0
        k = min(k, self._n)
        top = np.argpartition(-sims, k - 1)[:k] if k < self._n else np.arange(self._n)
        top = top[np.argsort(-sims[top])]
        return [(int(self._ids[r]), float(sims[r])) for r in top if self._ids[r] >= 0]
