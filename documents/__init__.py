"""The way out: a materialised view of `olp.documents` (TopicDocument, key
stream_id/topic_id, newest version wins) with an HTTP read API, server-sent events and an
optional webhook sink.

    view.py      the view: newest version per topic, bounded history, numbered updates (pure)
    hub.py       fan-out of updates to the SSE subscriptions (bounded queues)
    sse.py       server-sent-events framing, both ways
    webhook.py   coalescing queue + POST with retries (tenacity)
    keys.py      the typed app keys and the reader's state
    service.py   the aiohttp app factory: the Kafka reader and the webhook in cleanup_ctx
    routes.py    the read API
"""
