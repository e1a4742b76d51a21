"""The online ranker: a river model that orders candidates by their features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from river import compose, linear_model, optim, preprocessing


class OnlineRanker:
    """Logistic regression on standardised candidate features, learnt one example at a time.

    Training goes through river (``learn_one``); scoring a whole candidate matrix uses the
    current scaler statistics and weights with numpy, which gives the same numbers as
    ``predict_proba_one`` without a Python call per candidate.

    Examples
    --------
    >>> ranker = OnlineRanker(["affinity", "noise"])
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(2000):
    ...     x = rng.normal(size=2)
    ...     ranker.learn_one(x, bool(x[0] + 0.1 * rng.normal() > 0))
    >>> X = np.array([[2.0, 0.0], [-2.0, 0.0]])
    >>> p = ranker.score_many(X)
    >>> bool(p[0] > 0.9 and p[1] < 0.1)
    True
    >>> bool(np.isclose(p[0], ranker.model.predict_proba_one({"affinity": 2.0, "noise": 0.0})[True]))
    True
    """

    def __init__(self, feature_names: Sequence[str], learning_rate: float = 0.02,
                 l2: float = 1e-4) -> None:
        self.feature_names = list(feature_names)
        self.scaler = preprocessing.StandardScaler()
        self.classifier = linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), l2=l2)
        self.model = compose.Pipeline(self.scaler, self.classifier)
        self.n_learned = 0

    def learn_one(self, x: np.ndarray, clicked: bool) -> None:
        self.model.learn_one(dict(zip(self.feature_names, x.tolist())), bool(clicked))
        self.n_learned += 1

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Click probability for each row of ``X`` (candidates x features)."""
        names = self.feature_names
        mean = np.array([self.scaler.means[f] for f in names])
        var = np.array([self.scaler.vars[f] for f in names])
        w = np.array([self.classifier.weights.get(f, 0.0) for f in names])
        # river's StandardScaler leaves a feature at 0 while its variance is 0.
        with np.errstate(divide="ignore", invalid="ignore"):
            Z = np.where(var > 0, (X - mean) / np.sqrt(var), 0.0)
        return 1.0 / (1.0 + np.exp(-(Z @ w + self.classifier.intercept)))
