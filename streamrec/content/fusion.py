"""Feature-level fusion of an item's text, image and tags into one item embedding.

Fixed and documented (the learned fusion arrives with the teacher/student issue): each part is
L2-normalised, sent through its own seeded Gaussian random projection (which keeps inner
products up to a small error, Johnson-Lindenstrauss), weighted, concatenated and normalised. The
fused cosine is then about ``0.6 * text + 0.3 * image + 0.1 * tags``; an item without an image
gives the image's weight to the text. Tags are hashed (signed) into their own block, so two
items sharing a tag are close even when their titles differ.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from streamrec.content.encoders import IMAGE_DIM, IMAGE_VERSION, TEXT_DIM, TEXT_VERSION

DIM = 128
#: (block width, weight of the block in the fused cosine)
TEXT_BLOCK, IMAGE_BLOCK, TAG_BLOCK = (80, 0.6), (32, 0.3), (16, 0.1)


class FixedFusion:
    """Text (384-d), image (1280-d) and tags -> a unit vector of :data:`DIM` dimensions.

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

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.text_proj = (rng.normal(size=(TEXT_DIM, TEXT_BLOCK[0]))
                          / np.sqrt(TEXT_BLOCK[0])).astype(np.float32)
        self.image_proj = (rng.normal(size=(IMAGE_DIM, IMAGE_BLOCK[0]))
                           / np.sqrt(IMAGE_BLOCK[0])).astype(np.float32)
        self.version = f"{TEXT_VERSION}+{IMAGE_VERSION}+tags:fixed-v{1 + seed}:{DIM}"

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        n = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, n, out=np.zeros_like(x), where=n > 0)

    @staticmethod
    def hash_tags(tags: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.zeros((len(tags), TAG_BLOCK[0]), np.float32)
        for r, item_tags in enumerate(tags):
            for tag in item_tags:
                h = zlib.crc32(tag.lower().encode())
                out[r, h % TAG_BLOCK[0]] += 1.0 if (h >> 16) & 1 else -1.0
        return out

    def fuse(self, text: np.ndarray, image: np.ndarray | None,
             tags: Sequence[Sequence[str]], has_image: np.ndarray | None = None) -> np.ndarray:
        """``image`` rows where ``has_image`` is False (or ``image`` None) count as missing."""
        n = len(text)
        t = self._unit(self._unit(np.asarray(text, np.float32)) @ self.text_proj)
        g = self._unit(self.hash_tags(tags))
        if image is None:
            i, has_image = np.zeros((n, IMAGE_BLOCK[0]), np.float32), np.zeros(n, bool)
        else:
            i = self._unit(self._unit(np.asarray(image, np.float32)) @ self.image_proj)
            has_image = np.ones(n, bool) if has_image is None else np.asarray(has_image, bool)
        w_text = np.where(has_image, TEXT_BLOCK[1], TEXT_BLOCK[1] + IMAGE_BLOCK[1])[:, None]
        w_image = np.where(has_image, IMAGE_BLOCK[1], 0.0)[:, None]
        fused = np.hstack([np.sqrt(w_text) * t, np.sqrt(w_image) * i,
                           np.sqrt(TAG_BLOCK[1]) * g]).astype(np.float32)
        return self._unit(fused)
