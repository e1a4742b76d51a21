"""Starting a Faust worker from our settings."""

from __future__ import annotations

import asyncio

from faust.worker import Worker

from streamrec import metrics
from streamrec.config import Settings
from streamrec.event_loop import install_uvloop
from streamrec.heap import freeze_startup_objects, observe_pauses
from streamrec.records.topics import ensure_topics
from streamrec.streams.app import create_app


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Create the topics, build the app and run it until interrupted (blocks)."""
    install_uvloop()
    asyncio.run(ensure_topics(settings))
    app = create_app(settings)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(app, loglevel=loglevel, loop=loop, quiet=True)
    freeze_startup_objects()  # see streamrec/heap.py: full collections skip these from now on
    observe_pauses(metrics.GC_PAUSE_SECONDS)
    worker.execute_from_commandline()
