"""The online ranker: a river model that orders candidates by their features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from river import linear_model, optim, preprocessing, utils


class OnlineRanker:
    """Pairwise logistic regression (RankNet with a linear scorer), learnt one pair at a time.

    Each training pair says "the user preferred ``x_better`` to ``x_worse``"; river's
    ``LogisticRegression`` learns ``P(better > worse) = sigmoid(w . (z_better - z_worse))`` on
    standardised feature differences, so ``w . z`` ranks candidates. Pairwise training optimises
    the order of a list, which is what top-K needs; a pointwise classifier fed hard negatives
    oscillates instead. Scoring a candidate matrix uses the current scaler statistics and
    weights with numpy, one matrix-vector product per list.

    Examples
    --------
    >>> ranker = OnlineRanker(["affinity", "noise"])
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(500):
    ...     a, b = rng.normal(size=2), rng.normal(size=2)
    ...     better, worse = (a, b) if a[0] > b[0] else (b, a)
    ...     ranker.learn_pair(better, worse)
    >>> ranker.score_many(np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 3.0]])).argsort()[::-1].tolist()
    [0, 2, 1]
    """

    def __init__(self, feature_names: Sequence[str], learning_rate: float = 0.02,
                 l2: float = 1e-4) -> None:
        self.feature_names = list(feature_names)
        self.scaler = preprocessing.StandardScaler()
        self.classifier = linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), l2=l2, intercept_lr=0.0)
        self.n_learned = 0

    def learn_pair(self, x_better: np.ndarray, x_worse: np.ndarray, weight: float = 1.0) -> None:
        """Learn that ``x_better`` should rank above ``x_worse`` (both directions, so the
        classifier stays symmetric)."""
        names = self.feature_names
        for diff, label in ((x_better - x_worse, True), (x_worse - x_better, False)):
            d = dict(zip(names, diff.tolist()))
            self.scaler.learn_one(d)
            self.classifier.learn_one(self.scaler.transform_one(d), label, weight)
        self.n_learned += 1

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """A ranking score for each row of ``X`` (candidates x features); higher is better."""
        names = self.feature_names
        var = np.array([self.scaler.vars[f] for f in names])
        w = np.array([self.classifier.weights.get(f, 0.0) for f in names])
        # Differences are centred by construction, so only the scale matters for the order.
        scale = np.where(var > 0, 1.0 / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
        return X @ (w * scale)

    def state(self) -> dict:
        """Weights and scaler statistics as plain JSON-able data (no pickle)."""
        sc = self.scaler
        return {"features": self.feature_names, "n_learned": self.n_learned,
                "weights": dict(self.classifier.weights),
                "counts": dict(sc.counts), "means": dict(sc.means), "vars": dict(sc.vars)}

    def load_state(self, state: dict) -> None:
        if state.get("features") != self.feature_names:
            return  # saved by another version of the feature set: start afresh
        self.n_learned = int(state["n_learned"])
        self.classifier._weights = utils.VectorDict(
            {k: float(v) for k, v in state["weights"].items()})
        for name in ("counts", "means", "vars"):
            stat = getattr(self.scaler, name)
            stat.clear()
            stat.update({k: float(v) for k, v in state[name].items()})
