"""The student's towers in torch, for distillation; served by
:class:`~streamrec.models.student_scorer.StudentScorer` from the snapshot they write."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from streamrec.models.student_scorer import BEHAVIOUR, quantise_int8


class StudentTowers(nn.Module):
    """The trainable student; ``item_adapter``/``user_adapter`` map its vectors to the
    teacher's size for the hidden-representation loss and are not part of the snapshot."""

    def __init__(self, n_ids: int, content_dim: int = 128, dim: int = 32, hidden: int = 64,
                 id_dim: int = 16, history: int = 30, teacher_dim: int = 128) -> None:
        super().__init__()
        self.config = dict(n_ids=n_ids, content_dim=content_dim, dim=dim, hidden=hidden,
                           id_dim=id_dim, history=history)
        self.ids = nn.Embedding(n_ids + 1, id_dim)
        nn.init.normal_(self.ids.weight, std=0.05)
        self.bias = nn.Embedding(n_ids + 1, 1)
        nn.init.zeros_(self.bias.weight)
        self.item1 = nn.Linear(content_dim + id_dim + BEHAVIOUR, hidden)
        self.item2 = nn.Linear(hidden, dim)
        # As in the teacher, a content prior the MLP corrects: a linear map of the fused
        # embedding (start it with :meth:`init_prior`), the MLP's output starting at zero.
        self.prior = nn.Linear(content_dim, dim, bias=False)
        nn.init.zeros_(self.item2.weight)
        nn.init.zeros_(self.item2.bias)
        self.recency = nn.Parameter(torch.zeros(history))
        # Log weights of a history item the user only viewed, and of one they clicked.
        self.kind_weight = nn.Parameter(torch.log(torch.tensor([0.3, 1.0])))
        self.user = nn.Linear(dim, dim)
        with torch.no_grad():
            self.user.weight.copy_(torch.eye(dim))
            self.user.bias.zero_()
        self.item_adapter = nn.Linear(dim, teacher_dim)
        self.user_adapter = nn.Linear(dim, teacher_dim)

    def init_prior(self, fused: np.ndarray) -> None:
        """Start the prior as the top principal directions of the window's content
        embeddings: the ``dim``-d map that keeps most of their cosine structure."""
        x = np.asarray(fused, np.float64)
        x = x[np.abs(x).sum(1) > 0]
        dim = self.prior.weight.shape[0]
        if len(x) < dim:
            return
        _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
        with torch.no_grad():
            self.prior.weight.copy_(torch.from_numpy(vt[:dim]).float())

    def item_vectors(self, fused: torch.Tensor, behaviour: torch.Tensor,
                     ids: torch.Tensor) -> torch.Tensor:
        x = torch.cat([fused, self.ids(ids), behaviour], 1)
        return self.item2(torch.relu(self.item1(x))) + self.prior(fused)

    def item_bias(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bias(ids).squeeze(1)

    def user_vectors(self, item_vecs: torch.Tensor, history: torch.Tensor,
                     clicked: torch.Tensor) -> torch.Tensor:
        mask = history >= 0
        w = torch.softmax(self.recency[-history.shape[1]:], 0) * mask
        w = w * self.kind_weight.exp()[clicked.long()]
        w = w / w.sum(1, keepdim=True).clamp(min=1e-9)
        return self.user((w.unsqueeze(2) * item_vecs[history.clamp(min=0)]).sum(1))

    def snapshot(self, item_ids: Sequence[str], behaviour: np.ndarray,
                 quantise: bool = False) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Tensors and metadata to publish. ``item_ids[r]`` is id row ``r + 1``;
        ``behaviour`` has one row per id row (row 0: unseen items)."""
        state = {k: v.detach().cpu().numpy().astype(np.float32)
                 for k, v in self.state_dict().items() if not k.endswith("adapter.weight")
                 and not k.endswith("adapter.bias")}
        state["behaviour"] = np.asarray(behaviour, np.float32)
        if quantise:
            state = quantise_int8(state)
        meta = {"config": json.dumps(self.config), "item_ids": json.dumps(list(item_ids)),
                "quantised": "int8" if quantise else "none"}
        return state, meta
