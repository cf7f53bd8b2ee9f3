"""Per-call client overhead of the model gateway (aiohttp) against the official `openai` SDK
(`AsyncOpenAI`, httpx), at 100 calls in flight, against the scripted OpenAI-compatible server.

The server runs in its own process and answers at once, so what is measured is the client: wall
time per call, this process's CPU time per call and the latency percentiles. Both clients send
the same body (`processors.chat_request.build_request`, OpenAI's json_schema dialect) and read
the same answer; the SDK additionally builds its typed response objects, which is part of its
cost. Rounds alternate between the clients so that drift on a shared machine hits both.

    python bench/gateway_overhead.py [--calls 2000] [--concurrency 100] [--rounds 3]

Needs `pip install openai` (not a project dependency). Writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from olp.catalog import Catalog, ModelSpec  # noqa: E402
from processors.chat_request import build_request  # noqa: E402

MESSAGES = [
    {"role": "system", "content": "You organise live transcripts. Answer with JSON only."},
    {
        "role": "user",
        "content": "<transcript>\n" + "[1] A sentence of the transcript.\n" * 60 + "</transcript>",
    },
]
SCHEMA = {
    "type": "object",
    "properties": {"first_id": {"type": "integer"}, "last_id": {"type": "integer"}},
    "required": ["first_id", "last_id"],
    "additionalProperties": False,
}


def serve(queue: Any) -> None:
    from launcher.scripted_llm import Reply, ScriptedLLM

    server = ScriptedLLM(lambda model, body: Reply('{"first_id": 1, "last_id": 9}')).start()
    server.requests = _Discard()  # keep no history: a long run would grow it without bound
    queue.put(server.base_url)
    time.sleep(3600)


class _Discard(list):  # type: ignore[type-arg]
    def append(self, item: Any) -> None:
        pass


async def run(call: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> dict[str, float]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one() -> None:
        async with gate:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(calls)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    latencies.sort()
    return {
        "wall_us": wall / calls * 1e6,
        "cpu_us": cpu / calls * 1e6,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "calls_s": calls / wall,
    }


async def with_gateway(base_url: str, calls: int, concurrency: int) -> dict[str, float]:
    import aiohttp

    from processors.model_gateway import ModelGateway

    catalog = Catalog(models=(ModelSpec(name="m", base_url=base_url, max_concurrency=concurrency),))
    async with aiohttp.ClientSession(trust_env=True) as session:
        gateway = ModelGateway(catalog, session, {}, attempts=1)

        async def call() -> Any:
            return await gateway.complete("m", MESSAGES, SCHEMA)

        await run(call, min(calls, 200), concurrency)  # warm-up: connections, caches
        return await run(call, calls, concurrency)


async def with_sdk(base_url: str, calls: int, concurrency: int) -> dict[str, float]:
    from openai import AsyncOpenAI

    spec = ModelSpec(name="m", base_url=base_url)
    body = dict(build_request(spec, MESSAGES, SCHEMA).body)
    async with AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:

        async def call() -> Any:
            done = await client.chat.completions.create(**body)
            return done.choices[0].message.content, done.usage

        await run(call, min(calls, 200), concurrency)
        return await run(call, calls, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    queue: Any = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(queue,), daemon=True)
    server.start()
    base_url = queue.get(timeout=30)
    results: dict[str, list[dict[str, float]]] = {"aiohttp gateway": [], "openai SDK": []}
    try:
        for _ in range(args.rounds):
            results["aiohttp gateway"].append(
                asyncio.run(with_gateway(base_url, args.calls, args.concurrency))
            )
            results["openai SDK"].append(asyncio.run(with_sdk(base_url, args.calls, args.concurrency)))
    finally:
        server.terminate()
    print(f"{args.calls} calls x {args.rounds} rounds, {args.concurrency} in flight; medians over rounds")
    print(
        f"{'client':<16} {'wall us/call':>12} {'cpu us/call':>12} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>8}"
    )
    for name, rounds in results.items():
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        print(
            f"{name:<16} {med['wall_us']:>12.0f} {med['cpu_us']:>12.0f} {med['p50_ms']:>8.1f}"
            f" {med['p99_ms']:>8.1f} {med['calls_s']:>8.0f}"
        )


if __name__ == "__main__":
    main()
