"""Topic names, and creating them on a broker."""

from __future__ import annotations

from aiokafka.admin import NewTopic

from streamrec.clients import kafka_admin
from streamrec.config import Settings

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
#: The topic each event type goes to (retirements travel with the uploads of their items).
TOPIC_OF = {**{v: k for k, v in EVENT_TYPE.items()}, "retire": UPLOADS}


async def ensure_topics(settings: Settings, partitions: int | None = None,
                        replication: int | None = None) -> None:
    """Create every topic that does not exist yet (existing ones are left alone), with the
    settings' partitions and replication unless given."""
    admin = kafka_admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(t, partitions or settings.partitions,
                        replication or settings.replication) for t in ALL if t not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()
