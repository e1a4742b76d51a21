"""Feature-level fusion of an item's text, image and tags into one item embedding, and the
layout of that embedding (its blocks and their weights), which the content source reads.

Each part is L2-normalised, sent through its own seeded Gaussian random projection (which keeps
inner products up to a small error, Johnson-Lindenstrauss), weighted, concatenated and
normalised. With the fixed weights (:data:`FIXED`, the cold default) the fused cosine is about
``0.6 * text + 0.3 * image + 0.1 * tags``; an item without an image gives the image's weight
to the text. Tags are hashed (signed) into their own block, so two items sharing a tag are
close even when their titles differ.

Block ``b`` of a fused vector is ``sqrt(w_b)`` times a unit vector, so other weights are a
per-column scale of the stored vectors (:class:`Reweighting`): a training round learns them
from clicks and the content source applies them without re-encoding anything.

This module needs neither torch nor the encoders until a :class:`FixedFusion` is built, so
the models can read the layout without them.
"""

from __future__ import annotations

import json
import math
import numbers
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Block:
    """A block of the fused vector: its columns and its weight in the fixed fusion."""

    name: str
    offset: int
    width: int
    weight: float

    @property
    def columns(self) -> slice:
        return slice(self.offset, self.offset + self.width)


TEXT = Block("text", 0, 80, 0.6)
IMAGE = Block("image", 80, 32, 0.3)
TAGS = Block("tags", 112, 16, 0.1)
#: The fused vector, in column order.
BLOCKS = (TEXT, IMAGE, TAGS)
DIM = sum(b.width for b in BLOCKS)
#: How far from 1 the weights may sum (they are rounded in transit) before they are refused.
SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class FusionWeights:
    """Weights of the text, image and tag blocks in the fused cosine: finite, non-negative,
    summing to 1 (normalised exactly on construction). An item without an image gives the
    image's weight to its text. Anything else raises ``ValueError`` saying what is wrong.

    >>> FusionWeights.parse('{"text": 0.2, "image": 0.1, "tags": 0.7}').tags
    0.7
    >>> FusionWeights(0.5, 0.5, 0.5)
    Traceback (most recent call last):
    ...
    ValueError: fusion weights must sum to 1, these sum to 1.5
    """

    text: float
    image: float
    tags: float

    def __post_init__(self) -> None:
        values = (self.text, self.image, self.tags)
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            raise ValueError(f"fusion weights must be numbers, got {values!r}")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"fusion weights must be finite, got {values!r}")
        if min(values) < 0:
            raise ValueError(f"fusion weights must be non-negative, got {values!r}")
        total = sum(values)
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise ValueError(f"fusion weights must sum to 1, these sum to {total:.6g}")
        # Exactly 1 stays untouched, so the fixed weights fuse exactly as they always have.
        scale = 1.0 if abs(total - 1.0) < 1e-12 else total
        for name, v in zip(("text", "image", "tags"), values):
            object.__setattr__(self, name, float(v) / scale)

    @classmethod
    def parse(cls, value: str | Mapping | Sequence) -> FusionWeights:
        """From JSON or a mapping ``{"text", "image", "tags"}``, or three numbers in that
        order."""
        try:
            if isinstance(value, (str, bytes)):
                value = json.loads(value)
            if isinstance(value, Mapping):
                if set(value) != {"text", "image", "tags"}:
                    raise ValueError(f"fusion weights need exactly text, image and tags, got "
                                     f"{sorted(value)}")
                return cls(value["text"], value["image"], value["tags"])
            values = list(value)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"fusion weights are not readable: {exc}") from None
        if len(values) != 3:
            raise ValueError(f"fusion weights need three numbers, got {len(values)}")
        return cls(*values)

    def as_dict(self) -> dict[str, float]:
        return {"text": self.text, "image": self.image, "tags": self.tags}

    def to_json(self) -> str:
        return json.dumps(self.as_dict())

    def __str__(self) -> str:
        return f"text {self.text:.3f} image {self.image:.3f} tags {self.tags:.3f}"

    def columns(self, has_image: bool) -> np.ndarray:
        """The weight of each column of a fused vector (``DIM`` values)."""
        text = self.text if has_image else self.text + self.image
        image = self.image if has_image else 0.0
        return np.concatenate([np.full(b.width, w, np.float64)
                               for b, w in zip(BLOCKS, (text, image, self.tags))])


#: The cold default: what the encoders fuse with, and what a worker serves until a training
#: round publishes weights learned from clicks.
FIXED = FusionWeights(TEXT.weight, IMAGE.weight, TAGS.weight)


def has_image(vectors: np.ndarray) -> np.ndarray:
    """Which fused vectors carry an image (an item without one has an all-zero image block)."""
    return np.atleast_2d(vectors)[:, IMAGE.columns].any(axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


class Reweighting:
    """Vectors fused with ``base`` turned into the vectors fused with ``weights``, without the
    raw features: block ``b`` is scaled by ``sqrt(weights_b / base_b)`` (for an item without
    an image the text block carries text + image in both), then the vector is normalised, as
    :meth:`FixedFusion.fuse` does.

    A user profile (a weighted sum of stored item vectors) is mapped by the same column
    scales; since items with and without an image scale their text differently, the profile
    also keeps the text of its items without an image as a separate sum
    (:func:`imageless_text`). The map is exact for items with all three blocks; an item with
    no tags (or no text) was normalised over its other blocks, so it enters a profile with a
    length a little off the re-fused item's.

    >>> rng = np.random.default_rng(0)
    >>> text, image = rng.normal(size=(3, 384)), rng.normal(size=(3, 1280))
    >>> tags = [("jazz",), ("rock", "live"), ()]
    >>> w = FusionWeights(0.2, 0.1, 0.7)
    >>> stored = FixedFusion().fuse(text, image, tags, has_image=np.array([True, False, True]))
    >>> refused = FixedFusion(weights=w).fuse(text, image, tags,
    ...                                       has_image=np.array([True, False, True]))
    >>> bool(np.allclose(Reweighting(w).items(stored), refused, atol=1e-6))
    True
    """

    def __init__(self, weights: FusionWeights, base: FusionWeights = FIXED) -> None:
        scales = []
        for flag in (True, False):
            new, old = weights.columns(flag), base.columns(flag)
            if np.any((old == 0) & (new > 0)):
                raise ValueError(f"a block the base fusion ({base}) left out cannot be weighted "
                                 f"back in ({weights})")
            scales.append(np.sqrt(np.divide(new, old, out=np.zeros_like(new), where=old > 0))
                          .astype(np.float32))
        self.weights, self.base = weights, base
        self.with_image, self.without_image = scales
        #: What a sum of imageless items' text blocks adds to a profile's text, per unit.
        self.imageless_extra = float(self.without_image[TEXT.offset]
                                     - self.with_image[TEXT.offset])

    def items(self, vectors: np.ndarray) -> np.ndarray:
        """Stored item vectors (rows) as fused with the new weights."""
        x = np.atleast_2d(np.asarray(vectors, np.float32))
        scale = np.where(has_image(x)[:, None], self.with_image, self.without_image)
        return _unit(x * scale)

    def profiles(self, sums: np.ndarray, imageless: np.ndarray | None = None) -> np.ndarray:
        """Profiles (weighted sums of stored item vectors) as sums of re-weighted items;
        ``imageless`` (rows x text width) is the part of each sum's text block that came from
        items without an image."""
        out = np.atleast_2d(np.asarray(sums, np.float32)) * self.with_image
        if imageless is not None:
            out[:, TEXT.columns] += self.imageless_extra * np.atleast_2d(imageless)
        return out


def imageless_text(vector: np.ndarray) -> np.ndarray | None:
    """The text block of a stored item vector without an image (None when it has one): what a
    profile sums apart to be re-weighted exactly (see :class:`Reweighting`)."""
    if vector.shape[-1] != DIM or vector[IMAGE.columns].any():
        return None
    return vector[TEXT.columns]


class FixedFusion:
    """Text (384-d), image (1280-d) and tags -> a unit vector of :data:`DIM` dimensions, the
    blocks weighted by ``weights`` (default :data:`FIXED`).

    >>> f = FixedFusion()
    >>> rng = np.random.default_rng(0)
    >>> t = rng.normal(size=(2, 384)); i = rng.normal(size=(2, 1280))
    >>> v = f.fuse(t, i, [("cats",), ("cats",)])
    >>> v.shape, np.allclose(np.linalg.norm(v, axis=1), 1.0)
    ((2, 128), True)
    >>> f.version
    'minilm-l6-v2+effnet-lite0+tags:fixed-v1:128'
    """

    dim = DIM

    def __init__(self, seed: int = 0, weights: FusionWeights = FIXED) -> None:
        # Imported here: the encoders bring torch, which the layout's readers do without.
        from streamrec.content.encoders import IMAGE_DIM, IMAGE_VERSION, TEXT_DIM, TEXT_VERSION

        rng = np.random.default_rng(seed)
        self.text_proj = (rng.normal(size=(TEXT_DIM, TEXT.width))
                          / np.sqrt(TEXT.width)).astype(np.float32)
        self.image_proj = (rng.normal(size=(IMAGE_DIM, IMAGE.width))
                           / np.sqrt(IMAGE.width)).astype(np.float32)
        self.weights = weights
        # Other weights make other vectors: they must not share the embedding cache's key.
        kind = "fixed" if weights == FIXED else \
            f"w{weights.text:.4f},{weights.image:.4f},{weights.tags:.4f}"
        self.version = f"{TEXT_VERSION}+{IMAGE_VERSION}+tags:{kind}-v{1 + seed}:{DIM}"

    _unit = staticmethod(_unit)

    @staticmethod
    def hash_tags(tags: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.zeros((len(tags), TAGS.width), np.float32)
        for r, item_tags in enumerate(tags):
            for tag in item_tags:
                h = zlib.crc32(tag.lower().encode())
                out[r, h % TAGS.width] += 1.0 if (h >> 16) & 1 else -1.0
        return out

    def fuse(self, text: np.ndarray, image: np.ndarray | None,
             tags: Sequence[Sequence[str]], has_image: np.ndarray | None = None) -> np.ndarray:
        """``image`` rows where ``has_image`` is False (or ``image`` None) count as missing."""
        n = len(text)
        t = self._unit(self._unit(np.asarray(text, np.float32)) @ self.text_proj)
        g = self._unit(self.hash_tags(tags))
        if image is None:
            i, has_image = np.zeros((n, IMAGE.width), np.float32), np.zeros(n, bool)
        else:
            i = self._unit(self._unit(np.asarray(image, np.float32)) @ self.image_proj)
            has_image = np.ones(n, bool) if has_image is None else np.asarray(has_image, bool)
        w = self.weights
        w_text = np.where(has_image, w.text, w.text + w.image)[:, None]
        w_image = np.where(has_image, w.image, 0.0)[:, None]
        fused = np.hstack([np.sqrt(w_text) * t, np.sqrt(w_image) * i,
                           np.sqrt(w.tags) * g]).astype(np.float32)
        return self._unit(fused)
