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
    assert isinstance(app.consumer.scheduler, EventTimeScheduling)
    assert app.consumer.scheduler.consumer is app.consumer


class _Fetching:
    """What the scheduler reads from Faust's consumer: high-water marks and the generation."""

    def __init__(self, highwater):
        self.highwater = highwater.__getitem__
        self.app = self
        self.consumer_generation_id = 1


def test_records_wait_for_a_partition_whose_next_records_are_still_on_the_broker():
    views, clicks = TP("views", 0), TP("clicks", 0)
    consumer = _Fetching({views: 10, clicks: 3})
    scheduler = EventTimeScheduling(consumer, max_hold_s=60)
    first = scheduler.iterate({views: [Record(0, 10), Record(1, 20)],
                               clicks: [Record(0, 15), Record(1, 25), Record(2, 40)]})
    # views ran out at offset 1 of 10: the clicks after its last timestamp wait
    assert [(tp.topic, r.timestamp) for tp, r in first] == [
        ("views", 10), ("clicks", 15), ("views", 20)]
    second = scheduler.iterate({views: [Record(2, 22), Record(3, 30)]})
    assert [(tp.topic, r.timestamp) for tp, r in second] == [
        ("views", 22), ("clicks", 25), ("views", 30)]
    third = scheduler.iterate({})  # views still behind on the broker (highwater 10)
    assert list(third) == []
    consumer.consumer_generation_id = 2  # a rebalance: Faust fetches again from commits
    assert list(scheduler.iterate({})) == []


def test_a_partition_that_does_not_come_holds_the_rest_only_so_long():
    views, clicks = TP("views", 0), TP("clicks", 0)
    scheduler = EventTimeScheduling(_Fetching({views: 10, clicks: 2}), max_hold_s=0.0)
    fetched = {views: [Record(0, 10)], clicks: [Record(0, 15), Record(1, 25)]}
    assert len(list(scheduler.iterate(fetched))) == 1
    assert [r.timestamp for _, r in scheduler.iterate({})] == [15, 25]
