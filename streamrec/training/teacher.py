"""The teacher: a two-tower model over full content features, trained on the recent log.

It is the large model of the distillation seed: too slow for the streaming path (its item tower
reads the 384-d MiniLM and 1280-d EfficientNet features), trained periodically, on the GPU when
there is one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from streamrec.models.base import CandidateSource
from streamrec.models.catalog import Catalog


def pick_device(prefer: str | None = None) -> torch.device:
    """``prefer`` if given, else CUDA when present, else the CPU: the same code runs on both."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TeacherTowers(nn.Module):
    """Item tower: text, image and item-id embedding, each projected to ``hidden`` and fused
    by learned weights (a softmax over the three, renormalised when an item has no image),
    then an MLP to ``dim``. User tower: attention pooling of the history's item vectors with a
    learned query and position embeddings, then an MLP. Score: their dot product.

    >>> m = TeacherTowers(n_ids=5, text_dim=4, image_dim=6, dim=8, hidden=16, history=3,
    ...                   content_dim=8)
    >>> items = m.item_vectors(torch.randn(5, 4), torch.randn(5, 6), torch.ones(5, dtype=torch.bool),
    ...                        torch.arange(5), torch.randn(5, 8))
    >>> user = m.user_vectors(items, torch.tensor([[-1, 0, 2]]), torch.tensor([[0, 1, 0]]))
    >>> (user @ items.T).shape
    torch.Size([1, 5])
    """

    def __init__(self, n_ids: int, text_dim: int = 384, image_dim: int = 1280, dim: int = 128,
                 hidden: int = 256, history: int = 30, id_dim: int = 64,
                 content_dim: int = 128) -> None:
        super().__init__()
        self.config = dict(n_ids=n_ids, text_dim=text_dim, image_dim=image_dim, dim=dim,
                           hidden=hidden, history=history, id_dim=id_dim, content_dim=content_dim)
        self.text = nn.Linear(text_dim, hidden)
        self.image = nn.Linear(image_dim, hidden)
        # Row 0 stands for items the training window never saw.
        self.ids = nn.Embedding(n_ids + 1, id_dim)
        nn.init.normal_(self.ids.weight, std=0.05)
        self.id_proj = nn.Linear(id_dim, hidden)
        self.fusion_logits = nn.Parameter(torch.zeros(3))
        self.item_mlp = nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                      nn.GELU(), nn.Linear(hidden, dim))
        # The content prior: the fixed fusion's embedding, through a learned map that starts
        # as the identity, so the model starts from content similarity and learns corrections
        # (with a few thousand clicks, towers from scratch fall back on popularity).
        self.prior = nn.Linear(content_dim, dim, bias=False)
        # Cosines of unit content vectors are small: the softmax over candidates needs a scale,
        # learned here rather than by distorting the vectors (exp(2.3) = 10 at the start).
        self.log_scale = nn.Parameter(torch.tensor(2.3))
        with torch.no_grad():
            self.prior.weight.copy_(torch.eye(dim, content_dim))
        self.positions = nn.Parameter(torch.zeros(history, dim))
        # Clicked vs only viewed history items: an embedding each, an attention bias each,
        # and their weights in the mean (starting at 1 for a click, 0.3 for a view).
        self.kind = nn.Parameter(torch.zeros(2, dim))
        self.kind_bias = nn.Parameter(torch.zeros(2))
        self.kind_weight = nn.Parameter(torch.log(torch.tensor([0.3, 1.0])))
        self.query = nn.Parameter(torch.randn(dim) / dim ** 0.5)
        self.user_mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.GELU(),
                                      nn.Linear(hidden, dim))
        # The corrections start near zero: the user's exactly (user = history mean), the
        # items' small but not zero, else with no content (prior 0) both towers would output
        # 0 and every gradient vanish.
        nn.init.zeros_(self.user_mlp[-1].weight)
        nn.init.zeros_(self.user_mlp[-1].bias)
        nn.init.normal_(self.item_mlp[-1].weight, std=0.01)
        nn.init.zeros_(self.item_mlp[-1].bias)

    def fusion_weights(self, has_image: torch.Tensor) -> torch.Tensor:
        """Per item, the weights of (text, image, id)."""
        w = torch.softmax(self.fusion_logits, 0).expand(len(has_image), 3).clone()
        w[:, 1] = w[:, 1] * has_image
        return w / w.sum(1, keepdim=True)

    def item_vectors(self, text: torch.Tensor, image: torch.Tensor, has_image: torch.Tensor,
                     ids: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """Item vectors; ``ids`` are 1-based rows of the id table, 0 for unseen items;
        ``fused`` the fixed fusion's content embedding."""
        w = self.fusion_weights(has_image.float())
        h = (w[:, :1] * self.text(text) + w[:, 1:2] * self.image(image)
             + w[:, 2:] * self.id_proj(self.ids(ids)))
        return self.item_mlp(h) + self.prior(fused)

    def user_vectors(self, item_vecs: torch.Tensor, history: torch.Tensor,
                     clicked: torch.Tensor) -> torch.Tensor:
        """User vectors from ``history`` (users x H rows of ``item_vecs``, -1 pads) and
        ``clicked`` (users x H: clicked, or only viewed)."""
        mask = history >= 0
        kind = clicked.long()
        h = item_vecs[history.clamp(min=0)] + self.positions[-history.shape[1]:] + self.kind[kind]
        att = (h @ self.query + self.kind_bias[kind]).masked_fill(~mask, -1e9)
        att = torch.softmax(att, 1) * mask  # a user with no history pools to zero
        pooled = (att.unsqueeze(2) * h).sum(1)
        w = self.kind_weight.exp()[kind] * mask
        mean = (w.unsqueeze(2) * h).sum(1) / w.sum(1, keepdim=True).clamp(min=1e-9)
        return self.user_mlp(torch.cat([pooled, mean], 1)) + mean


class TeacherSource(CandidateSource):
    """A trained teacher as a candidate source (for evaluation beside the student): item
    vectors computed once from the full content features, a user's vector from their latest
    distinct items at each call.

    >>> import numpy as np
    >>> m = TeacherTowers(n_ids=2, text_dim=4, image_dim=6, dim=8, hidden=16, history=3,
    ...                   content_dim=8)
    >>> src = TeacherSource(m, ["a", "b", "c"], np.ones((3, 4), np.float32),
    ...                     np.zeros((3, 6), np.float32), np.zeros(3, bool), np.array([1, 2, 0]),
    ...                     np.eye(3, 8, dtype=np.float32))
    >>> for item in "abc":
    ...     src.add_item(item, ts=0)
    >>> src.learn_one("ann", "a", ts=0)
    >>> sorted(r.item_id for r in src.recommend("ann", k=5, exclude=["a"]))
    ['b', 'c']
    >>> src.recommend("bob", k=5)  # no history: no opinion
    []
    """

    name = "teacher"
    floor = -float("inf")

    def __init__(self, teacher: TeacherTowers, item_ids: list[str], text, image, has_image,
                 id_rows, fused, catalog: Catalog | None = None) -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        self.teacher = teacher
        self.history = teacher.config["history"]
        self._row = {item: r for r, item in enumerate(item_ids)}
        device = next(teacher.parameters()).device
        with torch.no_grad():
            self._items = teacher.item_vectors(*(torch.as_tensor(a).to(device) for a in (
                text, image, has_image, id_rows, fused)))
        self._own: dict[str, dict[int, bool]] = {}  # user -> history row -> clicked

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        self.catalog.add(item, ts)
        r = self._row.get(item)
        h = self._own.setdefault(user, {})
        if r is not None:
            h[r] = h.get(r, False) or clicked  # dicts keep first-seen order

    def score_many(self, users, now: float = 0.0) -> np.ndarray:
        n, H = len(self.catalog), self.history
        hist = np.full((len(users), H), -1, np.int64)
        flags = np.zeros((len(users), H), bool)
        for u, user in enumerate(users):
            h = list(self._own.get(user, {}).items())[-H:]
            if h:
                hist[u, H - len(h):] = [r for r, _ in h]
                flags[u, H - len(h):] = [c for _, c in h]
        # Catalogue order -> rows of the item vectors; items the teacher never saw score -inf.
        rows = np.array([self._row.get(i, -1) for i in self.catalog.ids], np.int64)
        with torch.no_grad():
            device = self._items.device
            user_vecs = self.teacher.user_vectors(self._items, torch.from_numpy(hist).to(device),
                                                  torch.from_numpy(flags).to(device))
            S = (user_vecs @ self._items.T).cpu().numpy()
        out = np.full((len(users), n), -np.inf, np.float32)
        known = rows >= 0
        out[:, known] = S[:, rows[known]]
        out[(hist < 0).all(axis=1)] = -np.inf
        return out

    def score_all(self, user: str, now: float = 0.0) -> np.ndarray:
        return self.score_many([user], now)[0]
