"""A published student in numpy (the worker never imports torch): the snapshot's tensors,
checked, dequantised if int8, and the arithmetic of its towers.

Inputs per item: the cached 128-d fused content embedding, and behaviour from the training
window (a 16-d id vector, a bias, log click and view counts); items newer than the window have
zero behaviour and are scored from their content alone. A user is a learned recency-weighted
pool of the item vectors of their history, through one linear layer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from streamrec.records.errors import SnapshotError

#: Behavioural inputs per item (see ``TrainingLog.behaviour``).
BEHAVIOUR = 3
#: Tensors a student snapshot must hold, with their ranks.
TENSORS = {"ids.weight": 2, "bias.weight": 2, "behaviour": 2, "item1.weight": 2,
           "item1.bias": 1, "item2.weight": 2, "item2.bias": 1, "recency": 1,
           "user.weight": 2, "user.bias": 1, "prior.weight": 2, "kind_weight": 1}
#: Weight matrices stored as int8 (per-row scales) in a quantised snapshot.
QUANTISED = ("ids.weight", "item1.weight", "item2.weight", "user.weight", "prior.weight")


def quantise_int8(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Post-training int8: each row of the big matrices as int8 with a float32 scale (4x
    smaller); the serving code dequantises on load.

    >>> q = quantise_int8({"item1.weight": np.array([[0.5, -1.0], [2.0, 0.0]], np.float32)})
    >>> q["item1.weight.int8"].tolist(), (q["item1.weight.scale"] * 127).tolist()
    ([[64, -127], [127, 0]], [1.0, 2.0])
    """
    out = {}
    for k, v in state.items():
        if k in QUANTISED:
            scale = np.maximum(np.abs(v).max(axis=1), 1e-12) / 127.0
            out[f"{k}.int8"] = np.clip(np.round(v / scale[:, None]), -127, 127).astype(np.int8)
            out[f"{k}.scale"] = scale.astype(np.float32)
        else:
            out[k] = v
    return out


def _dequantise(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(tensors)
    for k in QUANTISED:
        q, s = out.pop(f"{k}.int8", None), out.pop(f"{k}.scale", None)
        if q is not None and s is not None:
            out[k] = q.astype(np.float32) * s[:, None].astype(np.float32)
    return out


class StudentScorer:
    """A published student, in numpy: item vectors from fused content + behaviour, user vectors
    from history, scores as dot products plus the item bias.

    Built only from a snapshot's tensors and metadata, after checking every tensor is there
    with the right shape, so a bad snapshot fails here rather than mid-batch.
    """

    def __init__(self, tensors: dict[str, np.ndarray], meta: dict[str, str],
                 version: str = "unversioned") -> None:
        t = _dequantise(tensors)
        missing = [k for k in TENSORS if k not in t]
        if missing:
            raise SnapshotError(f"student {version}: missing tensors {missing}")
        for k, rank in TENSORS.items():
            if t[k].ndim != rank or not np.all(np.isfinite(t[k])):
                raise SnapshotError(f"student {version}: tensor {k} has shape {t[k].shape} "
                                    f"or non-finite values")
        try:
            self.config = json.loads(meta["config"])
            ids = json.loads(meta["item_ids"])
        except (KeyError, ValueError) as exc:
            raise SnapshotError(f"student {version}: bad metadata ({exc})") from None
        n_rows, hidden = len(ids) + 1, t["item1.weight"].shape[0]
        dim = t["item2.weight"].shape[0]
        expected = {"ids.weight": (n_rows, t["ids.weight"].shape[1]), "bias.weight": (n_rows, 1),
                    "behaviour": (n_rows, BEHAVIOUR), "item2.weight": (dim, hidden),
                    "user.weight": (dim, dim), "kind_weight": (2,),
                    "prior.weight": (dim, t["item1.weight"].shape[1] - t["ids.weight"].shape[1]
                                     - BEHAVIOUR)}
        for k, shape in expected.items():
            if t[k].shape != shape:
                raise SnapshotError(f"student {version}: tensor {k} is {t[k].shape}, "
                                    f"expected {shape}")
        self.content_dim = t["item1.weight"].shape[1] - t["ids.weight"].shape[1] - BEHAVIOUR
        if self.content_dim <= 0:
            raise SnapshotError(f"student {version}: item1.weight {t['item1.weight'].shape} "
                                f"does not fit the id and behaviour inputs")
        self.version = version
        self.quantised = meta.get("quantised", "none")
        self.dim = dim
        self.row = {item: r + 1 for r, item in enumerate(ids)}
        self.t = {k: v.astype(np.float32) for k, v in t.items()}
        # Folded for serving: the id and behaviour inputs are fixed per id row, so their share
        # of the first layer is a table (one gather instead of a matmul per candidate), and the
        # fused embedding meets the first layer and the prior in one matmul.
        w1 = self.t["item1.weight"].T
        c = self.content_dim
        self.per_row = (self.t["ids.weight"] @ w1[c:c + self.t["ids.weight"].shape[1]]
                        + self.t["behaviour"] @ w1[c + self.t["ids.weight"].shape[1]:]
                        + self.t["item1.bias"]).astype(np.float32)
        self.hidden = hidden
        self.w_fused = np.hstack([w1[:c], self.t["prior.weight"].T]).astype(np.float32)
        self.w2, self.b2 = self.t["item2.weight"].T.copy(), self.t["item2.bias"]
        self.wu, self.bu = self.t["user.weight"].T.copy(), self.t["user.bias"]
        self.history = len(self.t["recency"])

    def rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Id-table rows of ``item_ids`` (0: unseen in training)."""
        get = self.row.get
        return np.fromiter((get(i, 0) for i in item_ids), np.int64, len(item_ids))

    def item_vectors(self, fused: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, biases) of items with these fused embeddings and id rows."""
        z = np.asarray(fused, np.float32) @ self.w_fused
        h = z[:, :self.hidden]
        h += self.per_row[rows]
        np.maximum(h, 0.0, out=h)
        v = h @ self.w2
        v += z[:, self.hidden:]
        v += self.b2
        return v, self.t["bias.weight"][rows, 0]

    def user_vectors(self, item_vecs: np.ndarray, history: np.ndarray,
                     clicked: np.ndarray) -> np.ndarray:
        """Users x ``dim``; ``history`` is users x H rows of ``item_vecs`` (-1 pads),
        ``clicked`` says which of them the user clicked (the others were only viewed)."""
        H = history.shape[1]
        r = self.t["recency"][-H:]
        w = np.exp(r - r.max()) * (history >= 0) * np.exp(self.t["kind_weight"])[
            clicked.astype(np.int64)]
        w /= np.maximum(w.sum(1, keepdims=True), 1e-9)
        pooled = np.einsum("uh,uhd->ud", w, item_vecs[np.maximum(history, 0)])
        return pooled @ self.wu + self.bu
