"""The content fusion's block weights (text, image, tags), learned from a window's clicks.

The content source scores an item by the cosine, after centring on the catalogue's mean,
between the user's profile (a decayed sum of the items they consumed) and the item. With
block weights ``w`` that cosine is, up to the vectors' lengths, ``sum_b w_b * f_b``: ``f_b``
is the inner product of block ``b`` of the centred profile and of the centred item, with the
fixed fusion's weights taken out (an item without an image adds its text feature to the
image's weight, since its text carries both). A softmax regression on those three features,
each click's item against sampled items, fits ``w`` on the simplex (``w = v / sum(v)`` with
``v = exp(params)``; ``sum(v)`` is the temperature, which a small L2 penalty on ``v`` keeps
finite when one block separates the clicks completely). The profiles are the content source's
own, replayed over the window, as each stood before the user first met the clicked item.

The content source itself then scores the window's held-out clicks with the fixed and with
the learned weights; the learned ones are served only when they do better (the fixed fusion
stays the cold default).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from streamrec.content.fusion import BLOCKS, FIXED, TAGS, TEXT, FusionWeights, has_image
from streamrec.models.content import ContentSource
from streamrec.training.training_log import Examples, TrainingLog

#: scores_for(examples) -> examples x items, judged by a held-out hit rate.
Judge = Callable[[Callable[[Examples], np.ndarray]], float]


@dataclass
class FusionFit:
    """What the fit found, what is served, and the held-out figures behind the choice."""

    learned: FusionWeights
    chosen: FusionWeights
    fixed_hr: float
    learned_hr: float
    clicks: int
    seconds: float
    note: str = ""

    @property
    def served(self) -> str:
        return "learned" if self.chosen == self.learned and self.learned != FIXED else "fixed"

    def report(self) -> dict:
        return {"learned": self.learned.as_dict(), "served": self.served,
                "weights": self.chosen.as_dict(), "content_fixed_hr_at_10": self.fixed_hr,
                "content_learned_hr_at_10": self.learned_hr, "clicks_fitted": self.clicks,
                "seconds": self.seconds, **({"note": self.note} if self.note else {})}


@dataclass
class ClickProfiles:
    """Content-source profiles, one row per click: the decayed sum of stored item vectors,
    its total weight (0: no profile yet) and the text of its items without an image."""

    sums: np.ndarray
    weights: np.ndarray
    imageless: np.ndarray
    #: The click's position in the log -> its row.
    row_of: dict[int, int] = field(default_factory=dict)

    def take(self, rows: np.ndarray) -> ClickProfiles:
        return ClickProfiles(self.sums[rows], self.weights[rows], self.imageless[rows])


def window_content_source(log: TrainingLog, fused: np.ndarray) -> ContentSource:
    """A content source whose catalogue rows are the log's item rows, holding every item with
    content (rows of ``fused`` that are not zero)."""
    cs = ContentSource(dim=fused.shape[1])
    for item in log.item_ids:
        cs.catalog.add(item, 0.0)
    rows = np.flatnonzero(fused.any(axis=1))
    cs.set_embeddings([log.item_ids[j] for j in rows.tolist()], fused[rows])
    return cs


def replay_profiles(cs: ContentSource, log: TrainingLog, stop: int,
                    examples: Sequence[Examples]) -> list[ClickProfiles]:
    """Feed ``cs`` the log's interactions before ``stop`` and keep, for every click of each of
    ``examples``, the profile as it stood before the user's first interaction with the clicked
    item (a view before the click must not give the item away, as the evaluation protocol
    scores it)."""
    n_items = len(log.item_ids)
    keys = log.users[:stop] * n_items + log.items[:stop]
    uniq, first = np.unique(keys, return_index=True)
    wanted: dict[int, list[tuple[int, int]]] = {}
    out = []
    for e, ex in enumerate(examples):
        key = log.users[ex.at] * n_items + ex.positive
        at = first[np.searchsorted(uniq, key)]
        for r, t in enumerate(at.tolist()):
            wanted.setdefault(t, []).append((e, r))
        out.append(ClickProfiles(np.zeros((len(ex), cs.dim), np.float32),
                                 np.zeros(len(ex), np.float32),
                                 np.zeros((len(ex), TEXT.width), np.float32),
                                 {int(a): r for r, a in enumerate(ex.at.tolist())}))
    ids = log.item_ids
    for t in range(stop):
        u = int(log.users[t])
        for e, r in wanted.get(t, ()):
            prev = cs.profiles.get(u)
            if prev is not None:
                out[e].sums[r], out[e].weights[r] = prev[0], prev[1]
                side = cs.imageless.get(u)
                if side is not None:
                    out[e].imageless[r] = side
        cs.learn_one(u, ids[int(log.items[t])], float(log.ts[t]), bool(log.clicked[t]))
    return out


def content_scores(cs: ContentSource, profiles: ClickProfiles):
    """``scores_for`` of ``cs`` (with whatever fusion it has) for clicks whose profiles are
    ``profiles``."""
    keys = []
    for r in range(len(profiles.weights)):
        key = ("click", r)
        keys.append(key)
        if profiles.weights[r] > 0:
            cs.profiles[key] = (profiles.sums[r], float(profiles.weights[r]), 0.0)
            if profiles.imageless[r].any():
                cs.imageless[key] = profiles.imageless[r]

    def scores_for(ex: Examples) -> np.ndarray:
        return cs.score_many([keys[profiles.row_of[int(a)]] for a in ex.at.tolist()])
    return scores_for


def _canonical(x: np.ndarray, with_image: np.ndarray) -> np.ndarray:
    """Stored vectors (or profile sums, where ``with_image`` is False for text carried by
    items without an image) with the fixed fusion's block weights taken out."""
    scale = np.where(with_image[:, None], FIXED.columns(True), FIXED.columns(False))
    return np.divide(x, np.sqrt(scale), out=np.zeros_like(x), where=scale > 0)


@dataclass
class ItemBlocks:
    """The window's items with content, as the features read them: canonical (unit-weight)
    blocks centred on their mean and divided by the item's centred length under the fixed
    fusion, whether each has an image, and the canonical mean and index centre."""

    centred: np.ndarray
    image: np.ndarray
    mean: np.ndarray
    centre: np.ndarray

    @classmethod
    def of(cls, cs: ContentSource, items: np.ndarray) -> ItemBlocks:
        X = cs.index.matrix[items]
        img = has_image(X)
        U = _canonical(X, img)
        mean = U.sum(axis=0) / (len(items) + cs.index.prior_items)
        length = np.linalg.norm(X - cs.index.centre, axis=1, keepdims=True)
        return cls((U - mean) / np.maximum(length, 1e-9), img, mean, cs.index.centre.copy())


def block_features(blocks: ItemBlocks, profiles: ClickProfiles, positives: np.ndarray,
                   negatives: np.ndarray) -> np.ndarray:
    """clicks x (1 + negatives) x 3, column 0 the clicked item: the features ``f`` whose
    weighted sum ``w . f`` is the content source's cosine under block weights ``w`` (exactly,
    at the fixed weights, for items with all their blocks). ``positives`` (one per click) and
    ``negatives`` (shared) are rows of ``blocks``."""
    text = np.zeros_like(profiles.sums)
    text[:, TEXT.columns] = profiles.imageless
    P = _canonical(profiles.sums - text, np.ones(len(text), bool)) \
        + _canonical(text, np.zeros(len(text), bool))
    Pc = P - profiles.weights[:, None] * blocks.mean
    length = np.linalg.norm(profiles.sums - profiles.weights[:, None] * blocks.centre, axis=1)
    Pc /= np.maximum(length, 1e-9)[:, None]
    U = blocks.centred
    f = np.stack([np.hstack([(Pc[:, b.columns] * U[positives, b.columns]).sum(1)[:, None],
                             Pc[:, b.columns] @ U[negatives, b.columns].T]) for b in BLOCKS],
                 axis=-1)
    # An item without an image gives the image's weight to its text.
    cands = np.concatenate([positives[:, None], np.broadcast_to(negatives,
                                                                (len(positives), len(negatives)))], 1)
    f[..., 1] += np.where(~blocks.image[cands], f[..., 0], 0.0)
    return f.astype(np.float32)


def fit_weights(features: np.ndarray, valid: np.ndarray, tied: bool, l2: float = 1e-3,
                max_iter: int = 100) -> FusionWeights:
    """Softmax regression, column 0 of ``features`` (clicks x candidates x 3) the clicked
    item, ``valid`` masking the candidates that count. ``tied``: the text and image weights
    keep the fixed fusion's ratio (no item had an image, so the data cannot tell them
    apart). Three parameters and a smooth loss: L-BFGS, from the fixed weights."""
    F = torch.from_numpy(np.ascontiguousarray(np.moveaxis(features, -1, 0)))  # 3 x clicks x cands
    F = F.masked_fill(~torch.from_numpy(valid), 0.0)
    off = torch.zeros(valid.shape).masked_fill(~torch.from_numpy(valid), -1e9)
    base = torch.tensor([FIXED.text, FIXED.image, FIXED.tags], dtype=torch.float64)
    split = (base[:2] / base[:2].sum()).float()
    start = torch.log(base * 10.0).float()  # the fixed weights at a temperature of 10
    params = torch.nn.Parameter(torch.stack([torch.log(base[:2].sum() * 10.0).float(),
                                             start[2]]) if tied else start.clone())
    target = torch.zeros(F.shape[1], dtype=torch.long)

    def v_of(p: torch.Tensor) -> torch.Tensor:
        e = p.exp()
        return torch.cat([e[:1] * split, e[1:]]) if tied else e

    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = torch.tensordot(v_of(params), F, dims=1) + off
        v = v_of(params)
        loss = torch.nn.functional.cross_entropy(logits, target) + l2 * (v * v).sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        v = v_of(params).double()
        ok = bool(torch.isfinite(v).all()) and float(v.sum()) > 0
        return FusionWeights(*(v / v.sum()).tolist()) if ok else FIXED


def learn_fusion(log: TrainingLog, fused: np.ndarray, stop: int, train: Examples,
                 held: Examples, judge: Judge, seed: int = 0, negatives: int = 127,
                 max_clicks: int = 20_000, chunk: int = 512) -> FusionFit:
    """Fit block weights on ``train``'s clicks (the latest ``max_clicks`` that have a
    profile and whose item has content) and judge fixed and learned on ``held`` (``judge``
    turns a ``scores_for`` into a hit rate)."""
    t0 = time.perf_counter()
    cs = window_content_source(log, fused)
    items = np.flatnonzero(fused.any(axis=1))
    if len(items) < 2:
        return FusionFit(FIXED, FIXED, 0.0, 0.0, 0, time.perf_counter() - t0,
                         "no item of the window has content")
    fitted, judged = replay_profiles(cs, log, stop, [train, held])
    position = np.full(len(log.item_ids), -1, np.int64)
    position[items] = np.arange(len(items))
    usable = np.flatnonzero((fitted.weights > 0) & (position[train.positive] >= 0))
    usable = usable[-max_clicks:]
    learned, note = FIXED, ""
    if len(usable) < 50:
        note = f"only {len(usable)} training clicks with a content profile: kept the fixed"
    else:
        rng = np.random.default_rng(seed)
        blocks = ItemBlocks.of(cs, items)
        k = min(negatives, len(items) - 1)
        feats, valid = [], []
        for a in range(0, len(usable), chunk):
            rows = usable[a:a + chunk]
            pos = position[train.positive[rows]]
            neg = rng.choice(len(items), size=k, replace=False)  # shared by the chunk
            feats.append(block_features(blocks, fitted.take(rows), pos, neg))
            ok = np.ones((len(rows), 1 + k), bool)
            ok[:, 1:] = neg[None, :] != pos[:, None]  # a negative that is the click
            valid.append(ok)
        tied = not blocks.image.any()
        tags = bool(cs.index.matrix[items][:, TAGS.columns].any())
        learned = fit_weights(np.concatenate(feats), np.concatenate(valid), tied)
        if tied:
            note = "no item has an image: text and image keep the fixed fusion's ratio"
        if not tags:
            note = (note + "; " if note else "") + "no item has tags"
    cs.set_fusion(FIXED)
    fixed_hr = judge(content_scores(cs, judged))
    cs.set_fusion(learned)
    learned_hr = judge(content_scores(cs, judged)) if learned != FIXED else fixed_hr
    chosen = learned if learned_hr > fixed_hr else FIXED
    return FusionFit(learned, chosen, fixed_hr, learned_hr, len(usable),
                     time.perf_counter() - t0, note)
