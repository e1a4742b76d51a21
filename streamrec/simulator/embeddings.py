"""Uploads that bring their own item vector (``embedding``), so a worker registers them
without running its encoders: for producers that embed items themselves, for benchmarks that
publish catalogues of millions, and for the synthetic world's ``embeddings`` option.

>>> import numpy as np
>>> from streamrec.records.events import decode, encode
>>> up = upload_with_embedding("i7", np.ones(128), title="Jazz night", ts=1_700_000_000)
>>> up.embedding_model, up.embedding_dim, up.image
('minilm-l6-v2+effnet-lite0+tags:fixed-v1:128', 128, None)
>>> decode(encode(up), "upload") == up
True
>>> sorted(embedding_fields(np.ones(4), dtype="float16"))
['embedding', 'embedding_dtype', 'embedding_model']
"""

from __future__ import annotations

import base64
import time

import numpy as np

from streamrec.config import BUILTIN_EMBEDDING_MODEL
from streamrec.records.events import EMBEDDING_DTYPES, Upload

#: The dimension of the built-in space (a worker's catalogue vectors, unless it serves another).
DIM = 128


def _values(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, np.float64)
    if v.ndim != 1 or not len(v) or not np.isfinite(v).all():
        raise ValueError(f"an embedding is one non-empty row of finite numbers, got shape "
                         f"{v.shape}")
    return v


def upload_with_embedding(item_id: str, vector: np.ndarray, *,
                          model: str = BUILTIN_EMBEDDING_MODEL, title: str = "",
                          ts: float | None = None, creator_id: str = "c0",
                          tags: tuple[str, ...] = (), description: str = "",
                          event_id: str | None = None) -> Upload:
    """An upload of ``item_id`` carrying ``vector`` (any norm between 1e-3 and 1e4; workers
    store it normalised) in the space ``model`` names: :func:`streamrec.records.events.encode`
    writes it as base64 float32 (684 characters at 128-d), and
    :func:`streamrec.simulator.publish.publish` sends it to ``uploads``. The title may be
    empty: nothing is encoded. ``ts`` defaults to now, ``event_id`` to ``up-{item_id}``."""
    v = _values(vector).astype("<f4")
    return Upload(event_id or f"up-{item_id}", item_id, creator_id,
                  time.time() if ts is None else float(ts), title, description, tuple(tags),
                  embedding=v.tobytes(), embedding_model=model)


def embedding_fields(vector: np.ndarray, model: str = BUILTIN_EMBEDDING_MODEL,
                     dtype: str = "float32") -> dict[str, str]:
    """The fields that add ``vector`` to an upload's JSON written by hand: base64 of
    little-endian ``dtype`` values (``float16`` halves the message, at about 3 significant
    digits), with ``embedding_dtype`` and ``embedding_model``."""
    if dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"unsupported embedding dtype {dtype!r}: {', '.join(EMBEDDING_DTYPES)}")
    raw = _values(vector).astype("<f2" if dtype == "float16" else "<f4").tobytes()
    return {"embedding": base64.b64encode(raw).decode(), "embedding_dtype": dtype,
            "embedding_model": model}


def topic_vectors(topics: np.ndarray, seed: int, items: np.ndarray, noise: float = 0.3,
                  dim: int = DIM) -> np.ndarray:
    """Unit vectors of items from their topic mixtures (rows of ``topics``): one fixed random
    direction per topic (drawn from ``seed``), mixed by the item's weights, plus noise of its
    own (drawn from ``seed`` and the item's number in ``items``), so that items sharing topics
    are close and each item's vector is the same however many are drawn.

    >>> t = np.eye(3)[[0, 0, 1]]
    >>> v = topic_vectors(t, seed=0, items=np.arange(3))
    >>> bool(v[0] @ v[1] > v[0] @ v[2])
    True
    """
    topics = np.atleast_2d(topics)
    directions = np.random.default_rng([seed, 0x5EED]).normal(size=(topics.shape[1], dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    own = np.stack([np.random.default_rng([seed, int(j), 1]).normal(size=dim) for j in items])
    x = topics @ directions + noise * own / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
