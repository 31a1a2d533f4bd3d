"""The declared schema of a landing-zone event, as bronze parses it (never inferred); the bronze
tables themselves are declared in `recsys.tables`.
"""

from __future__ import annotations

from pyspark.sql import types as T

from recsys.tables import ARTIST_ID, EVENT_ID, EVENT_TYPE, TRACK_ID, USER_ID

S, L, D = T.StringType(), T.LongType(), T.DoubleType()


def _struct(*fields: tuple[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(name, dtype) for name, dtype in fields])


# Ids are strings: Spark renders a JSON number into a string field as its text, so `42` and
# `"42"` parse alike. `event_ts` stays text here (ISO or epoch ms), typed in silver. `genre`
# is text too: a list arrives as its JSON, and silver turns both forms into an array.
CARD = _struct(
    (ARTIST_ID, S), ("artist_name", S), (TRACK_ID, S), ("track_name", S), ("album_name", S),
    ("genre", S), ("artist_rank", L), ("artist_followers", L), ("track_likes", L),
    ("duration_ms", L), ("played_ms", L), ("volume", T.ArrayType(L)),
)
PLAYLIST = _struct(("playlist_id", S), ("playlist_name", S))
RECOMMENDATION = _struct(("request_id", S), ("model_version", S), ("variant", S), ("position", L), ("score", D))
GEO = _struct(("lat", D), ("lon", D))
CONTEXT = _struct(("session_id", S), ("device_os", S), ("app_version", S), ("source", S), ("geo", GEO))
USER = _struct(("email", S), ("display_name", S), ("ip", S))

CORRUPT = "_corrupt_record"
EVENT_FIELDS = (
    (EVENT_ID, S), (EVENT_TYPE, S), ("event_ts", S), (USER_ID, S), ("count", L), ("card", CARD),
    ("playlist", PLAYLIST), ("recommendation", RECOMMENDATION), ("context", CONTEXT), ("user", USER),
)
EVENT = _struct(*EVENT_FIELDS)
EVENT_WITH_CORRUPT = _struct(*EVENT_FIELDS, (CORRUPT, S))
KNOWN_TOP_LEVEL = tuple(name for name, _ in EVENT_FIELDS)
KNOWN_CARD = tuple(f.name for f in CARD.fields)

LINEAGE = _struct(("_source_file", S), ("_ingested_at", T.TimestampType()), ("_run_id", S))


# Fields a JSON list of texts may fill as well as a text: the contract's `genre`. And the text fields
# the contract types as a string or an integer: the ids a client may send as numbers, and the time.
LISTED = ("card.genre",)
STRING_OR_INTEGER = ("event_ts", USER_ID, f"card.{ARTIST_ID}", f"card.{TRACK_ID}")


def _kind(path: str, dtype: T.DataType) -> str | None:
    if isinstance(dtype, T.StringType):
        return "texts" if path in LISTED else "id" if path in STRING_OR_INTEGER else "text"
    if isinstance(dtype, T.LongType):
        return "integer"
    if isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, T.LongType):
        return "integers"
    return None


def _declared_kinds() -> tuple[str, ...]:
    fields: list[tuple[str, T.DataType]] = [(name, dtype) for name, dtype in EVENT_FIELDS
                                            if not isinstance(dtype, T.StructType)]
    fields += [(f"{name}.{f.name}", f.dataType) for name, dtype in EVENT_FIELDS if isinstance(dtype, T.StructType)
               for f in dtype.fields]
    return tuple(f"{path}={kind}" for path, dtype in fields if (kind := _kind(path, dtype)) is not None)


# The declared fields' JSON types as `LineShape` checks them (`path=kind`): a `text` field holds a
# string, a number or null, never `true`, `false`, an object or a list (Spark renders any JSON value
# into a string field, so `from_json` alone would read `"user_id": true` as the user "true"); an `id`
# a string, an integer or null; an `integer` an integer or null; `texts` and `integers` a list of
# those too. JSON Schema counts `2.0` as an integer, and so does bronze: `LineShape` rewrites it as
# `2` in those fields before `from_json` reads the line.
DECLARED_KINDS = _declared_kinds()
