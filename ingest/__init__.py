"""The ingest service: transcript segments in over HTTP (JSON lines), over a WebSocket
and from polled RSS/Atom feeds, out to `olp.transcripts` (TranscriptSegment, key stream_id).

    limits.py       token buckets per feed and sender, streams bound to their feed, highest
                    accepted id per stream (pure)
    segments.py     request bodies -> validated TranscriptSegment dicts (pure)
    sink.py         the Kafka producer behind one small interface
    news_poller.py  RSS/Atom polling, a background task of the service
    keys.py         the typed app keys
    service.py      the aiohttp app factory (cleanup_ctx: producer, pollers)
    routes.py       the HTTP and WebSocket API
    client.py       a Python client that honours 429 + Retry-After (used by `olp ingest --url`)
"""
