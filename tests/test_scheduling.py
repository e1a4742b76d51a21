"""The worker's consumer hands each fetch to its streams in event-time order."""

from collections import namedtuple

from faust.types import TP

from streamrec.config import Settings
from streamrec.streams.app import create_app
from streamrec.streams.scheduling import EventTimeScheduling

Record = namedtuple("Record", "offset timestamp")


def test_partitions_are_merged_by_timestamp_keeping_offset_order_and_ties():
    views = [TP("views", p) for p in range(2)]
    clicks = TP("clicks", 0)
    fetched = {
        views[0]: [Record(0, 100), Record(1, 105), Record(2, 300)],
        views[1]: [Record(0, 105), Record(1, 200)],
        clicks: [Record(0, 101), Record(1, 250), Record(2, 250)],
    }
    order = [(tp, r.offset) for tp, r in EventTimeScheduling().iterate(fetched)]
    assert order == [(views[0], 0), (clicks, 0), (views[0], 1), (views[1], 0),
                     (views[1], 1), (clicks, 1), (clicks, 2), (views[0], 2)]
    assert [(clicks, 0), (clicks, 1)] == [(tp, r.offset) for tp, r in
                                          EventTimeScheduling().iterate({clicks: fetched[clicks][:2]})]


def test_the_worker_app_uses_event_time_scheduling(tmp_path):
    app = create_app(Settings(kafka="127.0.0.1:9", redis="redis://127.0.0.1:9",
                              data_dir=str(tmp_path)))
    assert app.conf.ConsumerScheduler is EventTimeScheduling
    assert isinstance(app.consumer.scheduler, EventTimeScheduling)
