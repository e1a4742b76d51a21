"""Uploads -> fused item embeddings: validate the content, decode images, run both encoders once
per batch, fuse. What cannot be used is returned with its reason (for the dead-letter topic)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamrec.content.encoders import ImageEncoder, TextEncoder
from streamrec.content.fusion import FixedFusion
from streamrec.content.images import load_image
from streamrec.streams.events import InvalidEvent, Upload


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

    def encode(self, uploads: Sequence[Upload]) -> Encoded:
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
        if not positions:
            return Encoded([], np.zeros((0, self.dim), np.float32), rejected)
        text_vecs = self.text.encode(texts)
        image_vecs = None
        if images:
            image_vecs = np.zeros((len(positions), self.image.dim), np.float32)
            image_vecs[np.flatnonzero(has_image)] = self.image.encode(images)
        tags = [uploads[p].tags for p in positions]
        return Encoded(positions, self.fusion.fuse(text_vecs, image_vecs, tags, has_image),
                       rejected)
