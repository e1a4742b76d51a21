"""Named synthetic worlds that differ in what carries the signal, so that a recommender tuned
on one can be tested on another (docs/worlds.md).

>>> sorted(WORLDS)
['default', 'drift', 'images', 'sessions', 'sparse', 'tags', 'trends']
>>> first = world_events("tags", 300, n_users=40, n_items=30, images=False)[0]
>>> first.title, first.description, first.tags
('Long full stadium', 'behind derby first cup big time', ('football',))
>>> make_world("nope")
Traceback (most recent call last):
...
ValueError: unknown world 'nope'; known worlds: default, drift, images, sessions, sparse, tags, trends
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamrec.records.events import Event
from streamrec.simulator.world import World, WorldConfig


@dataclass(frozen=True)
class WorldSpec:
    """A named world: its default size and the :class:`WorldConfig` fields that differ from
    the default world's."""

    name: str
    description: str
    n_users: int
    n_items: int
    settings: Mapping[str, Any] = field(default_factory=dict)

    def config(self, n_users: int | None = None, n_items: int | None = None, seed: int = 0,
               images: bool = True, events_per_s: float = 100.0,
               embeddings: bool = False) -> WorldConfig:
        return WorldConfig(n_users=self.n_users if n_users is None else n_users,
                           n_items=self.n_items if n_items is None else n_items,
                           seed=seed, images=images, events_per_s=events_per_s,
                           embeddings=embeddings, **self.settings)


WORLDS: dict[str, WorldSpec] = {spec.name: spec for spec in (
    WorldSpec("default", "mixed-topic items whose text, two tags and image all carry the "
              "topics; slowly drifting tastes", 2000, 1000),
    # The size of a small real log: 600 users, 1,500 items, one topical tag per upload.
    WorldSpec("tags", "one topic per item, carried by its single tag; text mostly generic "
              "words, the image unrelated", 600, 1500,
              {"single_topic": True, "n_tags": 1, "topic_words": 0.2, "description_words": 6,
               "image_topical": False}),
    WorldSpec("sessions", "items in series; the page leads with the episode after the user's "
              "last click, which is likely clicked; users stay for several pages", 2000, 1000,
              {"series_length": 8.0, "session_continue": 0.6}),
    WorldSpec("trends", "quality and short bursts of hotness of new uploads dominate taste; "
              "the hot set turns over within minutes", 2000, 1000,
              {"quality_weight": 0.6, "trend_boost": 0.6}),
    WorldSpec("drift", "tastes random-walk several times faster and sometimes jump to a new "
              "topic", 2000, 1000, {"drift": 0.08, "taste_jump": 0.05}),
    WorldSpec("sparse", "many users with flat activity, each with a handful of events",
              10000, 1000, {"activity_exponent": 0.2}),
    WorldSpec("images", "one topic per item, carried by the image only: topic-neutral text, "
              "no tags", 2000, 1000,
              {"single_topic": True, "n_tags": 0, "topic_words": 0.0}),
)}


def make_world(name: str, n_users: int | None = None, n_items: int | None = None,
               seed: int = 0, images: bool = True, events_per_s: float = 100.0,
               embeddings: bool = False) -> World:
    """The world called ``name``, at its own size unless ``n_users`` or ``n_items`` is given;
    with ``embeddings``, uploads carry a vector of their topics instead of an image.

    >>> make_world("sparse", seed=1).cfg.n_users
    10000
    """
    spec = WORLDS.get(name)
    if spec is None:
        raise ValueError(f"unknown world {name!r}; known worlds: {', '.join(sorted(WORLDS))}")
    return World(spec.config(n_users, n_items, seed, images, events_per_s, embeddings))


def world_events(name: str, n_events: int, seed: int = 0, n_users: int | None = None,
                 n_items: int | None = None, images: bool = True,
                 start_ts: float = 1_700_000_000.0) -> list[Event]:
    """The first ``n_events`` events of the world called ``name`` (its catalogue first)."""
    world = make_world(name, n_users, n_items, seed, images)
    return list(itertools.islice(world.events(start_ts), n_events))
