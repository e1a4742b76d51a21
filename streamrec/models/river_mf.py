"""river's ``reco.BiasedMF`` used as a ranker over the whole catalogue (a baseline)."""

from __future__ import annotations

import numpy as np
from river import optim, reco

from streamrec.models.base import CandidateSource
from streamrec.models.catalog import Catalog, grow_rows


class RiverBiasedMF(CandidateSource):
    """Wraps :class:`river.reco.BiasedMF`: learns with ``learn_one``, ranks every item.

    Clicks are targets of 1 and views of 0 (watched, not chosen). Ranking the catalogue one
    ``predict_one`` at a time would cost ~15 us per item, so the item biases and latent vectors
    are mirrored into numpy arrays as river updates them and a user is scored with one
    matrix-vector product; the result equals ``predict_one`` for every item.

    Examples
    --------
    >>> mf = RiverBiasedMF(n_factors=4, seed=1)
    >>> for _ in range(20):
    ...     for user, item, clicked in [("ann", "tea", True), ("ann", "beer", False),
    ...                                 ("bob", "tea", True), ("bob", "cake", True)]:
    ...         mf.learn_one(user, item, ts=0, clicked=clicked)
    >>> scores = mf.score_all("ann")
    >>> bool(np.isclose(scores[mf.catalog.index["cake"]], mf.model.predict_one("ann", "cake")))
    True
    """

    name = "river_biasedmf"
    floor = -np.inf

    def __init__(self, catalog: Catalog | None = None, n_factors: int = 16,
                 learning_rate: float = 0.02, l2: float = 0.01, seed: int = 0) -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        self.model = reco.BiasedMF(
            n_factors=n_factors, bias_optimizer=optim.SGD(learning_rate),
            latent_optimizer=optim.SGD(learning_rate), l2_bias=l2, l2_latent=l2,
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed),
            seed=seed)
        self._bias = np.zeros(0)
        self._latents = np.zeros((0, n_factors))
        self._mirrored = 0

    def _mirror(self, j: int) -> None:
        item = self.catalog.ids[j]
        self._bias[j] = self.model.i_biases[item]
        self._latents[j] = self.model.i_latents[item]

    def _sync(self) -> None:
        n = len(self.catalog)
        if n > self._mirrored:
            self._bias = grow_rows(self._bias, n)
            self._latents = grow_rows(self._latents, n)
            for j in range(self._mirrored, n):
                self._mirror(j)
            self._mirrored = n

    def forget_user(self, user: str) -> None:
        for weights in (self.model.u_biases, self.model.u_latents):
            weights.pop(user, None)

    def forget_item(self, item: str) -> None:
        super().forget_item(item)
        for weights in (self.model.i_biases, self.model.i_latents):
            weights.pop(item, None)
        j = self.catalog.index.get(item)
        if j is not None and j < self._mirrored:
            self._bias[j] = 0.0
            self._latents[j] = 0.0

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        j = self.catalog.add(item, ts)
        self.model.learn_one(user, item, 1.0 if clicked else 0.0)
        self._sync()
        self._mirror(j)

    def score_all(self, user: str, now: float = 0.0) -> np.ndarray:
        self._sync()
        n = len(self.catalog)
        m = self.model
        if user not in m.u_latents:
            return self.no_opinion_on_retired(np.full(n, m.global_mean.get()) + self._bias[:n])
        return self.no_opinion_on_retired(m.global_mean.get() + m.u_biases[user]
                                          + self._bias[:n] + self._latents[:n] @ m.u_latents[user])
