"""The top layer: the `olp` command line, the one stack launcher (embedded dev stack and the
services as child processes) and the clients the command line, tests and benchmarks share.

    cli.py              the `olp` command group: services, topics, replay, policy, up, demo
    cli_feeds.py        feed commands: ingest, doc, tail, ingest-server, documents-server
    console.py          what every command shares: settings, errors, logging, printing
    clients.py          replay segments into olp.transcripts, follow olp.documents / olp.dlq
    embedded.py         child processes, the Tansu broker, the local llama.cpp model pool
    stack.py            the stack launcher: ServiceStack (services on a broker), EmbeddedStack
    scripted_llm.py     a scripted OpenAI-compatible server (tests, the benchmarks' instant model)
    scripted_roles.py   its perfect answers for the bundled sample transcript
    otlp_receiver.py    a local OTLP/HTTP receiver (tests and benchmarks read the services' spans)

Only this package imports the services (processors, policy_store, ingest, documents); they
import only `olp` and `schemas`.
"""
