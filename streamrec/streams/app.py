"""The Faust app: topics, the agents that consume them, and the worker's lifecycle."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import orjson
from aiohttp.web import Response
from redis.exceptions import RedisError

from streamrec import metrics, security
from streamrec.clients import redis_client
from streamrec.config import Settings
from streamrec.embedded import free_port
from streamrec.engine.host import EngineHost, InLoopHost
from streamrec.engine.interface import worker_id
from streamrec.engine.model_process import ModelProcess, ModelProcessError
from streamrec.engine.runner import pipelined
from streamrec.records import dead_letter, topics
from streamrec.records.errors import StateLost, WorkerMustStop
from streamrec.streams.batching import MicroBatches
from streamrec.streams.credentials import broker_credentials
from streamrec.streams.scheduling import EventTimeScheduling
from streamrec.streams.transport import App, TableManager
from streamrec.streams.web_auth import web_application_options

log = logging.getLogger(__name__)


#: Seconds a worker whose model process died may take to stop before it exits hard.
MODEL_GONE_EXIT_S = 10.0


def create_app(settings: Settings) -> App:
    """A Faust app with the interactions, uploads and rec-requests agents registered."""
    if not settings.kafka or not settings.redis:
        raise ValueError("settings.kafka and settings.redis must be set (or use --embedded)")
    security.check(settings, web=True)
    if settings.web_public and not settings.web_token and not security.is_loopback(
            settings.web_host):
        log.warning("web server on %s without a token (STREAMREC_WEB_PUBLIC): anyone who can "
                    "reach it can read /metrics", settings.web_host)
    datadir = Path(settings.data_dir) / f"faust-{settings.app_id}"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = App(
        settings.app_id,
        broker=f"kafka://{settings.kafka}",
        broker_credentials=broker_credentials(settings),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        consumer_auto_offset_reset="earliest",
        store="memory://",
        datadir=str(datadir),
        # Faust binds 0.0.0.0 by default, and two workers on one port crash: be explicit.
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port or free_port(),
        web_application_options=web_application_options(settings),
        producer_linger_ms=5,
        # Dead letters carry the rejected message intact (records/dead_letter.py).
        producer_max_request_size=dead_letter.MAX_MESSAGE_BYTES,
        consumer_group_instance_id=settings.instance_id or None,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 3,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        # Records merged by timestamp across partitions and topics, not round-robin: a
        # session's views and clicks then share a micro-batch (streams/scheduling.py).
        ConsumerScheduler=EventTimeScheduling,
        # No table and every agent defined by now: the group join need not wait a second.
        TableManager=TableManager,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    redis = redis_client(settings)

    def topic(*names: str):
        return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw", partitions=settings.partitions)

    host: EngineHost
    started: asyncio.Future | None = None

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, assigned, **kwargs):
        # Users and partitions may have moved on elsewhere while this worker did not own them.
        if started is not None and started.done():  # a failed start is retried afresh
            await host.forget()
        await redis.hset(f"{settings.app_id}:workers", worker_id(), orjson.dumps({
            "ts": time.time(), "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
            "engine": settings.engine, "web": f"http://{settings.web_host}:{app.conf.web_port}"}))

    if settings.engine == "naive":
        from streamrec.engine.naive import NaivePipeline  # river: only this engine needs it

        naive = NaivePipeline(redis, settings.app_id, settings.top_k)

        @app.agent(topic(topics.VIEWS, topics.CLICKS, topics.UPLOADS), name="naive")
        async def naive_agent(stream):
            async for event in stream.events():
                await naive.handle(app.producer, event.message)

        return app

    stopping: Exception | None = None

    def stop_worker(exc: Exception) -> None:
        # The model process died, or the engine found it cannot go on (WorkerMustStop).
        # Batches in flight were taken from the stream but never acked: only a restart
        # from the committed offsets processes them again. Not carrying on without models.
        # Once: the reader of its replies and every agent waiting on it all report it.
        nonlocal stopping
        if stopping is not None:
            return
        stopping = exc
        if isinstance(exc, WorkerMustStop):
            metrics.STATE_LOST.inc(isinstance(exc, StateLost))
        log.critical("%s; stopping the worker", exc)
        # The graceful stop commits what was acked, then waits for the streams' acks, which
        # the batches in flight can no longer give: exit (non-zero) if it waits that long.
        asyncio.get_running_loop().call_later(MODEL_GONE_EXIT_S, os._exit, 1)
        asyncio.ensure_future(app.crash(exc))

    if settings.model_process:
        # The models live in the child: this process never imports them (engine/interface.py).
        host = ModelProcess(settings, worker_id(), on_gone=stop_worker)
    else:
        from streamrec.engine.build import build_engine

        host = InLoopHost(build_engine(settings, redis))

    async def ensure_started() -> None:
        # Once, however many agents ask at the same time; after a failure (Redis down), the
        # next batch tries again.
        nonlocal started
        if started is None:
            started = asyncio.ensure_future(host.start())
        try:
            await asyncio.shield(started)
        except Exception:
            if started.done():
                started = None
            raise

    def batch_agent(op: str, name: str, size: int, within_s: float, *names: str) -> None:
        """An agent that hands micro-batches of ``names`` to the engine's ``op``, takes in the
        next batch meanwhile, and acknowledges each once its lists are published."""
        async def agent(stream):
            try:
                await ensure_started()
                await pipelined(MicroBatches(stream, size, within_s),
                                lambda batch: host.submit(op, batch), app.producer, name,
                                highwater=app.consumer.highwater)
            except (ModelProcessError, WorkerMustStop) as exc:
                stop_worker(exc)

        app.agent(topic(*names), name=name.replace("-", "_"))(agent)

    batch_agent("interactions", "interactions", settings.batch_size, settings.batch_within_s,
                topics.VIEWS, topics.CLICKS)
    batch_agent("uploads", "uploads", settings.batch_size, settings.upload_within_s,
                topics.UPLOADS)
    batch_agent("requests", "rec-requests", settings.batch_size, settings.batch_within_s,
                topics.REC_REQUESTS)
    batch_agent("model_updates", "model-updates", 100, 0.1, topics.MODEL_UPDATES)

    @app.timer(interval=max(settings.refresh_s, 1.0))
    async def refresh_models():
        if started is None or not started.done():
            return
        try:
            await host.refresh_models()
        except WorkerMustStop as exc:
            stop_worker(exc)
        except (RedisError, OSError, ModelProcessError) as exc:
            log.warning("model refresh skipped, Redis unavailable: %s", exc)

    @app.on_before_shutdown.connect
    async def save_on_shutdown(sender, **kwargs):
        await host.close()

    @app.page("/metrics")
    async def metrics_page(web, request):
        return Response(body=metrics.render(), content_type="text/plain")

    return app
