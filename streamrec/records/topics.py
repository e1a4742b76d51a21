"""Topic names, and creating them on a broker."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

VIEWS = "views"
CLICKS = "clicks"
UPLOADS = "uploads"
REC_REQUESTS = "rec-requests"
RECOMMENDATIONS = "recommendations"
DEAD_LETTER = "dead-letter"
MODEL_UPDATES = "model-updates"

ALL = (VIEWS, CLICKS, UPLOADS, REC_REQUESTS, RECOMMENDATIONS, DEAD_LETTER, MODEL_UPDATES)
#: The event type each input topic carries.
EVENT_TYPE = {VIEWS: "view", CLICKS: "click", UPLOADS: "upload", REC_REQUESTS: "rec-request"}
TOPIC_OF = {v: k for k, v in EVENT_TYPE.items()}


async def ensure_topics(bootstrap: str, partitions: int, replication: int = 1) -> None:
    """Create every topic that does not exist yet (existing ones are left alone)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(t, partitions, replication) for t in ALL if t not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()
