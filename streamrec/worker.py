"""Starting a Faust worker from our settings."""

from __future__ import annotations

import asyncio

from streamrec.config import Settings


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    uvloop.install()
    return True


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Create the topics, build the app and run it until interrupted (blocks)."""
    from faust.worker import Worker

    from streamrec.heap import freeze_startup_objects, observe_pauses
    from streamrec.streams import metrics
    from streamrec.streams.app import create_app
    from streamrec.streams.topics import ensure_topics

    install_uvloop()
    asyncio.run(ensure_topics(settings.kafka, settings.partitions, settings.replication))
    app = create_app(settings)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(app, loglevel=loglevel, loop=loop, quiet=True)
    freeze_startup_objects()  # see streamrec/heap.py: full collections skip these from now on
    observe_pauses(metrics.GC_PAUSE_SECONDS)
    worker.execute_from_commandline()
