"""Uploads -> fused item embeddings: validate the content, decode images, run both encoders once
per batch, fuse. What cannot be used is returned with its reason (for the dead-letter topic)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamrec.content.encoders import IMAGE_DIM, TEXT_DIM, ImageEncoder, TextEncoder
from streamrec.content.fusion import FixedFusion
from streamrec.content.images import load_image
from streamrec.records.events import InvalidEvent, Upload


def upload_text(up: Upload) -> str:
    """What the text encoder reads: title, description and tags."""
    return ". ".join(p for p in (up.title.strip(), up.description.strip(), " ".join(up.tags))
                     if p)


@dataclass
class Encoded:
    """The batch's usable uploads (positions in the input), their vectors, and the rejects."""

    positions: list[int]
    vectors: np.ndarray
    rejected: list[tuple[int, str]]


@dataclass
class Features:
    """Raw encoder outputs of the usable uploads: text (n x 384), image (n x 1280, zero rows
    where ``has_image`` is False), tags; and the rejects."""

    positions: list[int]
    text: np.ndarray
    image: np.ndarray
    has_image: np.ndarray
    tags: list[tuple[str, ...]]
    rejected: list[tuple[int, str]]


class ItemEncoder:
    """Text + image encoders and the fusion, with the models loaded once per process.

    >>> enc = ItemEncoder()
    >>> out = enc.encode([Upload("e1", "i1", "c1", 0.0, "Jazz night", tags=("music",)),
    ...                   Upload("e2", "i2", "c1", 0.0, "   ")])
    >>> out.positions, out.vectors.shape, out.rejected
    ([0], (1, 128), [(1, 'empty text: title, description and tags are all blank')])
    """

    def __init__(self, image_root: str | Path | None = None,
                 fusion: FixedFusion | None = None) -> None:
        self.image_root = Path(image_root) if image_root is not None else None
        self.fusion = fusion or FixedFusion()
        self.text = TextEncoder.shared()
        self._image: ImageEncoder | None = None
        self.version = self.fusion.version
        self.dim = self.fusion.dim

    @property
    def image(self) -> ImageEncoder:
        if self._image is None:  # text-only catalogues (MovieLens) never load it
            self._image = ImageEncoder.shared()
        return self._image

    def features(self, uploads: Sequence[Upload]) -> Features:
        """The raw text and image features of the usable uploads (before fusion)."""
        positions, texts, images, has_image, rejected = [], [], [], [], []
        for pos, up in enumerate(uploads):
            try:
                text = upload_text(up)
                if not text:
                    raise InvalidEvent("empty text: title, description and tags are all blank")
                img = load_image(up.image, self.image_root) if up.image else None
            except InvalidEvent as exc:
                rejected.append((pos, str(exc)))
                continue
            positions.append(pos)
            texts.append(text)
            has_image.append(img is not None)
            if img is not None:
                images.append(img)
        n = len(positions)
        text_vecs = self.text.encode(texts) if texts else np.zeros((0, TEXT_DIM), np.float32)
        image_vecs = np.zeros((n, IMAGE_DIM), np.float32)
        if images:
            image_vecs[np.flatnonzero(has_image)] = self.image.encode(images)
        return Features(positions, text_vecs, image_vecs, np.array(has_image, bool),
                        [tuple(uploads[p].tags) for p in positions], rejected)

    def fuse(self, f: Features) -> np.ndarray:
        if not f.positions:
            return np.zeros((0, self.dim), np.float32)
        return self.fusion.fuse(f.text, f.image, f.tags, f.has_image)

    def encode(self, uploads: Sequence[Upload]) -> Encoded:
        f = self.features(uploads)
        return Encoded(f.positions, self.fuse(f), f.rejected)
