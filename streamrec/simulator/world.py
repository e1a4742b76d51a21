"""A synthetic world whose ground truth is known: users with drifting tastes, items with latent
topics, creators uploading over time, position-biased views and clicks drawn from affinity.

:class:`WorldConfig`'s defaults are the default world; its other fields move the signal
elsewhere (to one tag, the image, sequences, trends, drift, sparse users), and
:mod:`streamrec.simulator.worlds` names the combinations."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.config import BUILTIN_EMBEDDING_MODEL
from streamrec.records.events import Click, Event, Upload, View
from streamrec.simulator.embeddings import topic_vectors
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

#: Topic-neutral words for the text of worlds whose text should not (or only weakly) carry the
#: topic; none of them is in a topic's vocabulary.
GENERIC = ("video new best today week look watch first part story guide tips quick simple "
           "easy full update review thoughts moments highlights day life things ideas try "
           "little big favourite classic live episode special edition latest top amazing great "
           "good short long behind scenes making ultimate beginner complete every way why how "
           "what people time real inside talk world change start finally").split()


@dataclass
class WorldConfig:
    """A world's size and mechanics; the defaults are the default world (docs/worlds.md)."""

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
    #: Uploads carry a vector of their topics (``embedding``) instead of an image, so workers
    #: encode nothing (simulator/embeddings.py); the draws stay as they were.
    embeddings: bool = False
    seed: int = 0
    # What carries the signal. The defaults are the default world: every field below at its
    # default leaves the random draws, and so the event stream, as they always were.
    activity_exponent: float = 0.8  #: Zipf exponent of users' activity; lower is flatter
    single_topic: bool = False   #: each item has one topic (else a mixture)
    n_tags: int = 2              #: tags per upload: its top topics' names (0: no tags)
    topic_words: float = 1.0     #: share of title/description words from topic vocabularies
    description_words: int = 12
    image_topical: bool = True   #: the image shows the item's topics (else unrelated ones)
    quality_weight: float = 0.15  #: weight of an item's fixed quality in the affinity
    trend_boost: float = 0.0     #: size of a new item's burst of hotness (0: no bursts)
    trend_half_life: float = 3000.0  #: half-life of a burst, in interactions
    taste_jump: float = 0.0      #: per-session chance a user's taste jumps to a new topic
    series_length: float = 0.0   #: mean episodes per series (0: items stand alone)
    next_on_page: float = 0.9    #: chance the page leads with the last click's next episode
    next_click: float = 0.85     #: click chance of that next episode, when seen
    session_continue: float = 0.0  #: chance the same user loads another page straight away


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
        # Zipf-like: some users are busy (fewer, with a lower exponent)
        self.activity = 1.0 / np.arange(1, c.n_users + 1) ** c.activity_exponent
        self.activity /= self.activity.sum()
        self.creator_topics = rng.dirichlet(np.full(c.n_topics, 0.2), c.n_creators)
        names = list(TOPICS)
        self.topic_names = [names[t % len(names)] + ("" if t < len(names) else str(t))
                            for t in range(c.n_topics)]
        self.vocab = [TOPICS[names[t % len(names)]].split() for t in range(c.n_topics)]
        self.item_topics = np.zeros((0, c.n_topics))
        self.item_quality = np.zeros(0)
        self.item_creator: list[int] = []
        self.item_hit = np.zeros(0)    #: size of each item's burst of hotness (trends)
        self.item_born = np.zeros(0)   #: ``clock`` at each item's upload
        self.successor = np.zeros(0, dtype=np.int64)  #: next episode of each item, or -1
        self.series_tail: list[int] = []   #: last episode of every series so far
        self.last_click = np.full(c.n_users, -1)  #: each user's latest clicked item, or -1
        self.clock = 0                 #: interactions generated so far: the trends' clock
        self._event_ids = itertools.count()

    def new_item(self, ts: float) -> Upload:
        """A new item from a random creator, as its upload event (text, tags and image)."""
        c, rng = self.cfg, self.rng
        j = len(self.item_quality)
        # An episode takes its series' creator and topics, so only the sequence tells it apart.
        prev = -1
        if c.series_length and self.series_tail and rng.random() > 1.0 / c.series_length:
            prev = self.series_tail.pop(int(rng.integers(len(self.series_tail))))
            creator, topics = self.item_creator[prev], self.item_topics[prev]
        else:
            creator = int(rng.integers(c.n_creators))
            if c.single_topic:
                topics = np.eye(c.n_topics)[rng.choice(c.n_topics, p=self.creator_topics[creator])]
            else:
                topics = rng.dirichlet(self.creator_topics[creator] * 5 + 0.05)
        if prev >= 0:
            self.successor[prev] = j
        if c.series_length:
            self.series_tail.append(j)
        self.successor = np.append(self.successor, -1)
        self.item_topics = np.vstack([self.item_topics, topics])
        self.item_quality = np.append(self.item_quality, rng.normal(0.0, 0.5))
        # A few uploads become hits, most barely register.
        self.item_hit = np.append(self.item_hit, rng.exponential() if c.trend_boost else 0.0)
        self.item_born = np.append(self.item_born, self.clock)
        self.item_creator.append(creator)
        main = np.argsort(-topics)[:c.n_tags]
        def words(n: int) -> list[str]:
            out = []
            for _ in range(n):
                if c.topic_words < 1.0 and rng.random() >= c.topic_words:
                    out.append(GENERIC[int(rng.integers(len(GENERIC)))])
                    continue
                vocab = self.vocab[int(rng.choice(c.n_topics, p=topics))]
                out.append(vocab[int(rng.integers(len(vocab)))])
            return out

        image = embedding = None
        if c.embeddings:
            embedding = topic_vectors(topics, c.seed, np.array([j]))[0].astype("<f4").tobytes()
        elif c.images:
            image = to_base64_png(render_item(self._pictured(topics, j),
                                              seed=c.seed * 1_000_003 + j))
        return Upload(f"e{next(self._event_ids)}", f"i{j}", f"c{creator}", ts,
                      title=" ".join(words(3)).capitalize(),
                      description=" ".join(words(c.description_words)),
                      tags=tuple(self.topic_names[t] for t in main), image=image,
                      embedding=embedding,
                      embedding_model=BUILTIN_EMBEDDING_MODEL if c.embeddings else None)

    def _pictured(self, topics: np.ndarray, j: int) -> np.ndarray:
        """The topics item ``j``'s image shows: its own, or (``image_topical`` off) random ones
        from a generator of its own, so the stream's draws do not depend on ``images``."""
        if self.cfg.image_topical:
            return topics
        other = np.random.default_rng([self.cfg.seed, j])
        return other.dirichlet(np.full(self.cfg.n_topics, 0.3))

    def affinity(self, user: int) -> np.ndarray:
        """True affinity of ``user`` for every item (cosine of tastes and topics, plus quality,
        plus the hotness of recent uploads in a world with trends)."""
        t = self.tastes[user]
        cos = (self.item_topics @ t) / (np.linalg.norm(self.item_topics, axis=1)
                                        * np.linalg.norm(t) + 1e-12)
        aff = cos + self.cfg.quality_weight * self.item_quality
        if self.cfg.trend_boost:
            aff = aff + self.hotness()
        return aff

    def hotness(self) -> np.ndarray:
        """Every item's current burst of hotness: its size, halved every ``trend_half_life``
        interactions since the upload."""
        age = (self.clock - self.item_born) / self.cfg.trend_half_life
        return self.cfg.trend_boost * self.item_hit * 0.5 ** age

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
        n_catalogue = c.n_items if catalogue else 0
        for k in range(n_catalogue):
            yield self.new_item(ts)
            # Born at the usual upload pace before the stream, so not every item starts hot.
            self.item_born[-1] -= (n_catalogue - k) * c.upload_every
            emitted += 1
        interactions, next_upload = 0, c.upload_every
        u = -1
        while limit is None or emitted < limit:
            if u < 0 or not (c.session_continue and rng.random() < c.session_continue):
                u = int(rng.choice(c.n_users, p=self.activity))
                self.tastes[u] = np.abs(self.tastes[u] + rng.normal(0.0, c.drift, c.n_topics))
                if c.taste_jump and rng.random() < c.taste_jump:
                    self.tastes[u] = 0.3 * self.tastes[u] + 0.7 * np.eye(c.n_topics)[
                        rng.integers(c.n_topics)]
                self.tastes[u] /= self.tastes[u].sum()
            aff = self.affinity(u)
            # The page the app shows: mostly what fits the user, some of it new or random.
            age_bonus = np.exp(-(len(aff) - 1 - np.arange(len(aff))) / 200.0)
            weights = np.exp(3.0 * aff) * (1.0 + 2.0 * age_bonus)
            page = rng.choice(len(aff), size=min(c.page_size, len(aff)), replace=False,
                              p=weights / weights.sum())
            # "Up next": the episode after the user's last click leads the page.
            up_next = self.successor[self.last_click[u]] if self.last_click[u] >= 0 else -1
            if up_next >= 0 and rng.random() < c.next_on_page:
                page = np.concatenate([[up_next], page[page != up_next]])[: c.page_size]
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
                p_click = c.next_click if j == up_next else \
                    1.0 / (1.0 + np.exp(-c.click_sharpness * (aff[j] - 0.6)))
                emitted += 1
                interactions += 1
                self.clock += 1
                watching = False
                if rng.random() < p_click:
                    ts += dt
                    yield Click(f"e{next(self._event_ids)}", user_id, f"i{j}", ts)
                    self.last_click[u] = j
                    emitted += 1
                    interactions += 1
                    self.clock += 1
                    watching = j == up_next  # off to watch the next episode: the page is done
                if interactions >= next_upload:
                    next_upload += c.upload_every
                    yield self.new_item(ts)
                    emitted += 1
                if limit is not None and emitted >= limit:
                    return
                if watching:
                    break
