"""Upload images: inline base64 (optionally a ``data:`` URL) or ``file:NAME``, a reference to a
file under the worker's image root; decoded, size-checked and verified before any model sees
them.

>>> import base64, io
>>> from PIL import Image
>>> buf = io.BytesIO(); Image.new("RGB", (8, 8), "blue").save(buf, "PNG")
>>> load_image(base64.b64encode(buf.getvalue()).decode()).size
(8, 8)
>>> load_image("bm90IGFuIGltYWdl")
Traceback (most recent call last):
...
streamrec.records.events.InvalidEvent: corrupt image: cannot identify image file
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import stat
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from streamrec.records.events import InvalidEvent

#: Decoded bytes an image may take (the upload message itself is capped at 1000 KiB).
MAX_IMAGE_BYTES = 700 * 1024
MAX_SIDE = 4096
#: Longer side an accepted image is kept at: the encoders read 96-224 px.
KEPT_SIDE = 512
FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP"}


def _read_reference(ref: str, root: Path | None) -> bytes:
    """The bytes of ``file:NAME``: NAME is relative to ``root`` (a leading ``/`` too), and
    whatever it resolves to, through ``..`` or symlinks, must be a regular file inside it."""
    if root is None:
        raise InvalidEvent("image reference not allowed: this worker has no image root")
    name = ref[len("file:"):]
    if "\x00" in name:
        raise InvalidEvent(f"bad image reference: NUL byte in {ref[:200]!r}")
    base = root.resolve()
    try:
        path = (base / name.lstrip("/")).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, an unencodable name
        raise InvalidEvent(f"bad image reference: {ref[:200]!r} cannot be resolved") from None
    if base not in path.parents:
        raise InvalidEvent(f"image reference outside the image root: {ref[:200]!r}")
    try:
        # O_NONBLOCK: opening a FIFO someone left in the folder must not wait for a writer;
        # O_NOFOLLOW: the resolved name must not have become a symlink meanwhile.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise InvalidEvent(f"image not found: {ref[:200]!r}") from None
    except (OSError, ValueError) as exc:  # the reason names no path of the worker's
        raise InvalidEvent(f"image unreadable: {ref[:200]!r}: "
                           f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    try:
        return _read_regular(fd, ref)
    finally:
        os.close(fd)


def _read_regular(fd: int, ref: str) -> bytes:
    """At most :data:`MAX_IMAGE_BYTES` of an open regular file (a device or a FIFO is
    refused: it could be endless or never answer)."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidEvent(f"image unreadable: {ref[:200]!r} is not a regular file")
        if st.st_size > MAX_IMAGE_BYTES:
            raise InvalidEvent(f"image too large: {st.st_size} bytes, limit {MAX_IMAGE_BYTES}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_IMAGE_BYTES + 1)  # the file may have grown since fstat
    except OSError as exc:
        raise InvalidEvent(f"image unreadable: {ref[:200]!r}: {exc.strerror}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidEvent(f"image too large: more than {MAX_IMAGE_BYTES} bytes")
    return data


def image_bytes(image: str, root: Path | None = None) -> bytes:
    """The encoded bytes an upload's ``image`` field stands for."""
    # Only an explicit prefix marks a reference: base64 itself may contain "/" (JPEG starts
    # with "/9j/").
    if image.startswith("file:"):
        return _read_reference(image, root)
    if image.startswith("data:"):
        if "," not in image:
            raise InvalidEvent("corrupt image: data URL without a comma before its payload")
        payload = image.split(",", 1)[1]
    else:
        payload = image
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise InvalidEvent(f"image too large: {len(payload) * 3 // 4} bytes, "
                           f"limit {MAX_IMAGE_BYTES}")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEvent("corrupt image: not valid base64") from None


def load_image(image: str, root: Path | None = None) -> Image.Image:
    """Decode and verify an upload's image; :class:`InvalidEvent` says what is wrong.

    The result is at most :data:`KEPT_SIDE` pixels on its longer side: an image is decoded at
    full size (up to 4096 x 4096, 64 MB) only while it is shrunk, so a batch of large images
    holds one full-size image at a time, never all of them."""
    try:
        data = image_bytes(image, root)
        with Image.open(io.BytesIO(data)) as probe:
            fmt, (w, h) = probe.format, probe.size
            if fmt not in FORMATS:
                raise InvalidEvent(f"unsupported image format: {fmt}")
            if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
                raise InvalidEvent(f"image size out of range: {w}x{h}, limit {MAX_SIDE}")
            probe.verify()  # checksums and truncation, without decoding pixels
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (KEPT_SIDE, KEPT_SIDE))  # JPEG: decode at a reduced scale
            im.load()
            kept = im.convert("RGB")
        kept.thumbnail((KEPT_SIDE, KEPT_SIDE))
        return kept
    except InvalidEvent:
        raise
    except UnidentifiedImageError:
        raise InvalidEvent("corrupt image: cannot identify image file") from None
    except Image.DecompressionBombError:  # Pillow's own guard, before our size check
        raise InvalidEvent(f"image size out of range: more than {2 * Image.MAX_IMAGE_PIXELS} "
                           f"pixels declared, limit {MAX_SIDE} a side") from None
    except Exception as exc:  # decoders raise many types; any of them means a corrupt image
        raise InvalidEvent(f"corrupt image: {exc}"[:300]) from None
