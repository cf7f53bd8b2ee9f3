"""Avro contracts of every topic (one `.avsc` per record type) and the codec used everywhere
(spec section 2, `schemas/`). See `schemas.codec`."""

from schemas.codec import (
    RECORD_TYPES,
    AvroCodec,
    Codec,
    Contract,
    RegistryAvroCodec,
    contract,
    make_codec,
)

__all__ = ["RECORD_TYPES", "AvroCodec", "Codec", "Contract", "RegistryAvroCodec", "contract", "make_codec"]
