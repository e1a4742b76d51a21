"""Event logs on disk: JSONL (our format) and CSV with a column mapping."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from streamrec.records.events import Event, InvalidEvent, encode, from_dict, loads

log = logging.getLogger(__name__)


class LogError(ValueError):
    pass


def write_jsonl(events: Iterable[Event], path: str | Path) -> int:
    """Write one event per line; returns the count."""
    n = 0
    with open(path, "wb") as f:
        for ev in events:
            f.write(encode(ev) + b"\n")
            n += 1
    return n


def _checked(dicts: Iterable[tuple[int, object]], source: str, strict: bool) -> Iterator[Event]:
    bad = 0
    for line_no, d in dicts:
        try:
            if isinstance(d, InvalidEvent):
                raise d
            yield from_dict(d)
        except InvalidEvent as exc:
            if strict:
                raise LogError(f"{source}:{line_no}: {exc}") from None
            bad += 1
            if bad <= 5:
                log.warning("%s:%d skipped: %s", source, line_no, exc)
    if bad:
        log.warning("%s: %d invalid lines skipped", source, bad)


def read_jsonl(path: str | Path, strict: bool = False) -> Iterator[Event]:
    """Events from a JSONL file (each line an object with a ``type``). Invalid lines are
    skipped with a warning, or raise :class:`LogError` with ``strict``."""
    def lines():
        with open(path, "rb") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield n, loads(line)
                    except InvalidEvent as exc:  # malformed JSON, a duplicate key...
                        yield n, exc
    return _checked(lines(), str(path), strict)


_NUMERIC = {"ts", "position", "dwell_ms", "k"}


def parse_mapping(spec: str) -> dict[str, str]:
    """``"user_id=uid,item_id=movie,ts=time"`` -> our field -> CSV column."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise LogError(f"bad column mapping {part!r}: expected field=column")
        ours, theirs = (x.strip() for x in part.split("=", 1))
        out[ours] = theirs
    return out


def read_csv(path: str | Path, mapping: Mapping[str, str] | None = None,
             default_type: str | None = None, strict: bool = False) -> Iterator[Event]:
    """Events from a CSV file with a header. ``mapping`` names the column of each of our
    fields (unmapped fields are looked up under their own name); ``default_type`` applies
    when there is no ``type`` column."""
    mapping = dict(mapping or {})

    def rows():
        with open(path, newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.DictReader(f), start=2):
                d: dict[str, object] = {}
                for ours in ("type", "event_id", "user_id", "item_id", "ts", "request_id",
                             "position", "dwell_ms", "creator_id", "title", "description"):
                    v = row.get(mapping.get(ours, ours))
                    if v not in (None, ""):
                        d[ours] = v
                if "type" not in d and default_type:
                    d["type"] = default_type
                if "event_id" not in d:
                    d["event_id"] = f"{Path(path).name}:{n}"
                for k in _NUMERIC & d.keys():
                    try:
                        num = float(d[k])
                        d[k] = int(num) if k in ("position", "k") and num.is_integer() else num
                    except ValueError:
                        pass  # validation reports it
                yield n, d
    return _checked(rows(), str(path), strict)
