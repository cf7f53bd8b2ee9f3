"""The top layer: the `olp` command line, the one stack launcher (embedded dev stack and the
services as child processes) and the Kafka clients of the command line, tests and benchmarks.

    cli.py         the `olp` command group: services, topics, replay, policy, up, demo
    cli_feeds.py   feed commands: ingest, doc, tail, ingest-server, documents-server
    clients.py     replay segments into olp.transcripts, follow olp.documents / olp.dlq
    embedded.py    child processes, the Tansu broker, the local llama.cpp model pool
    stack.py       the stack launcher: EmbeddedStack (`olp up`/`olp demo`) and ServiceStack

Only this package imports the services (processors, policy_store, ingest, documents); they
import only `olp` and `schemas`.
"""
