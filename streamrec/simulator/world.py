"""A synthetic world whose ground truth is known: users with drifting tastes, items with latent
topics, creators uploading over time, position-biased views and clicks drawn from affinity."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.records.events import Click, Event, Upload, View
from streamrec.simulator.render import render_item, to_base64_png

#: Per-topic vocabularies (real words, so a text encoder's semantics carry the topic signal).
TOPICS = {
    "cooking": "recipe pasta oven spicy bake kitchen chef soup dessert garlic bread grill "
               "noodles flavour dinner",
    "football": "goal match striker league penalty stadium coach keeper derby transfer pitch "
                "tackle fans cup season",
    "space": "rocket orbit planet galaxy telescope astronaut mars launch nebula moon comet "
             "satellite cosmos star probe",
    "music": "concert guitar album band singer drums melody festival piano chorus vinyl song "
             "tour rhythm jazz",
    "gardening": "seeds compost flowers tomato roses soil pruning greenhouse herbs bloom "
                 "orchard vegetables lawn tulips harvest",
    "cars": "engine racing turbo sedan horsepower garage drift motor wheels tyres rally "
            "electric speed coupe highway",
    "fashion": "runway dress designer style jacket vintage fabric model outfit couture "
               "sneakers denim trend silk collection",
    "travel": "beach island passport hotel backpacking flight adventure coast mountains "
              "journey resort tourist city hiking sunset",
    "gaming": "console level boss multiplayer quest controller arcade esports speedrun "
              "pixel dungeon loot shooter strategy puzzle",
    "finance": "stocks market investing dividend budget savings crypto inflation bonds "
               "portfolio economy banking interest trading tax",
    "pets": "puppy kitten dog cat leash vet grooming paws adoption aquarium parrot hamster "
            "training treats fur",
    "fitness": "workout gym running yoga muscles cardio squats protein marathon stretching "
               "weights training pushups cycling sweat",
}


@dataclass
class WorldConfig:
    n_users: int = 2000
    n_items: int = 1000          #: items in the catalogue at the start
    n_topics: int = 12
    n_creators: int = 100
    upload_every: int = 50       #: one new item per this many interactions
    page_size: int = 8           #: items on one feed page
    drift: float = 0.02          #: per-session random walk of a user's taste
    click_sharpness: float = 6.0
    events_per_s: float = 100.0  #: simulated time: interactions per second
    images: bool = True          #: uploads carry a rendered PNG inline (base64)
    seed: int = 0


class World:
    """Generates a stream of events.

    Examples
    --------
    >>> world = World(WorldConfig(n_users=50, n_items=30, seed=1))
    >>> events = list(itertools.islice(world.events(start_ts=1_700_000_000.0), 200))
    >>> sorted({e.type for e in events})
    ['click', 'upload', 'view']
    >>> all(a.ts <= b.ts for a, b in zip(events, events[1:]))
    True
    """

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.cfg = c = config or WorldConfig()
        self.rng = np.random.default_rng(c.seed)
        rng = self.rng
        self.tastes = rng.dirichlet(np.full(c.n_topics, 0.3), c.n_users)
        self.activity = 1.0 / np.arange(1, c.n_users + 1) ** 0.8  # Zipf-like: some users are busy
        self.activity /= self.activity.sum()
        self.creator_topics = rng.dirichlet(np.full(c.n_topics, 0.2), c.n_creators)
        names = list(TOPICS)
        self.topic_names = [names[t % len(names)] + ("" if t < len(names) else str(t))
                            for t in range(c.n_topics)]
        self.vocab = [TOPICS[names[t % len(names)]].split() for t in range(c.n_topics)]
        self.item_topics = np.zeros((0, c.n_topics))
        self.item_quality = np.zeros(0)
        self.item_creator: list[int] = []
        self._event_ids = itertools.count()

    def new_item(self, ts: float) -> Upload:
        """A new item from a random creator, as its upload event (text, tags and image)."""
        c, rng = self.cfg, self.rng
        creator = int(rng.integers(c.n_creators))
        topics = rng.dirichlet(self.creator_topics[creator] * 5 + 0.05)
        j = len(self.item_quality)
        self.item_topics = np.vstack([self.item_topics, topics])
        self.item_quality = np.append(self.item_quality, rng.normal(0.0, 0.5))
        self.item_creator.append(creator)
        main = np.argsort(-topics)[:2]
        def words(n: int) -> list[str]:
            out = []
            for _ in range(n):
                vocab = self.vocab[int(rng.choice(c.n_topics, p=topics))]
                out.append(vocab[int(rng.integers(len(vocab)))])
            return out

        image = to_base64_png(render_item(topics, seed=c.seed * 1_000_003 + j)) \
            if c.images else None
        return Upload(f"e{next(self._event_ids)}", f"i{j}", f"c{creator}", ts,
                      title=" ".join(words(3)).capitalize(),
                      description=" ".join(words(12)),
                      tags=tuple(self.topic_names[t] for t in main), image=image)

    def affinity(self, user: int) -> np.ndarray:
        """True affinity of ``user`` for every item (cosine of tastes and topics, plus quality)."""
        t = self.tastes[user]
        cos = (self.item_topics @ t) / (np.linalg.norm(self.item_topics, axis=1)
                                        * np.linalg.norm(t) + 1e-12)
        return cos + 0.15 * self.item_quality

    def events(self, start_ts: float, limit: int | None = None,
               feed: Callable[[str], Sequence[str]] | None = None,
               catalogue: bool = True) -> Iterator[Event]:
        """An endless (or ``limit``-long) stream in time order: the initial catalogue's uploads
        (unless ``catalogue`` is False, to continue a world already published), then feed
        sessions interleaved with new uploads.

        Without ``feed`` the app's page is organic (mostly items that fit the user). With it,
        the loop is closed: ``feed(user_id)`` returns the recommendations the app shows first,
        and organic items fill the rest of the page.
        """
        c, rng = self.cfg, self.rng
        dt = 1.0 / c.events_per_s
        ts = start_ts
        emitted = 0
        for _ in range(c.n_items if catalogue else 0):
            yield self.new_item(ts)
            emitted += 1
        interactions, next_upload = 0, c.upload_every
        while limit is None or emitted < limit:
            u = int(rng.choice(c.n_users, p=self.activity))
            self.tastes[u] = np.abs(self.tastes[u] + rng.normal(0.0, c.drift, c.n_topics))
            self.tastes[u] /= self.tastes[u].sum()
            aff = self.affinity(u)
            # The page the app shows: mostly what fits the user, some of it new or random.
            age_bonus = np.exp(-(len(aff) - 1 - np.arange(len(aff))) / 200.0)
            weights = np.exp(3.0 * aff) * (1.0 + 2.0 * age_bonus)
            page = rng.choice(len(aff), size=min(c.page_size, len(aff)), replace=False,
                              p=weights / weights.sum())
            user_id = f"u{u}"
            if feed is not None:
                shown = [int(i[1:]) for i in feed(user_id)[: c.page_size // 2]
                         if i[1:].isdigit() and int(i[1:]) < len(aff)]
                page = np.array(shown + [j for j in page if j not in shown])[: c.page_size]
            for pos, j in enumerate(page):
                if rng.random() > 1.0 / (1.0 + pos) ** 0.7:  # position bias: lower, less seen
                    continue
                ts += dt
                yield View(f"e{next(self._event_ids)}", user_id, f"i{j}", ts, position=pos)
                p_click = 1.0 / (1.0 + np.exp(-c.click_sharpness * (aff[j] - 0.6)))
                emitted += 1
                interactions += 1
                if rng.random() < p_click:
                    ts += dt
                    yield Click(f"e{next(self._event_ids)}", user_id, f"i{j}", ts)
                    emitted += 1
                    interactions += 1
                if interactions >= next_upload:
                    next_upload += c.upload_every
                    yield self.new_item(ts)
                    emitted += 1
                if limit is not None and emitted >= limit:
                    return
