"""The project's one exception root. Library errors are re-raised as one of these with the cause
chained, so every shell can decide skip / dead-letter / crash by type."""


class OlpError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(OlpError):
    """Settings, catalog or feed configuration is invalid."""


class CodecError(OlpError):
    """A record could not be encoded or decoded with the Avro contracts in `schemas/`."""


class ParseError(OlpError):
    """A model answer could not be parsed or does not fit the chunk (unknown ids, bad spans)."""


class ModelCallError(OlpError):
    """A model endpoint failed (timeout, HTTP error, refused connection) after retries."""


class ValidationError(OlpError):
    """A record is well-formed Avro but violates the pipeline's rules (empty text, too large, ...)."""


class FeedError(OlpError):
    """Feed input is malformed: a transcript, subtitle or news file, or an ingest request's body."""


class UnavailableError(OlpError):
    """A dependency (Kafka, a remote feed, a webhook receiver) cannot be reached now; retry later."""
