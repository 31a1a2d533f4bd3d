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


# Fields a JSON list of strings may fill as well as a string: the contract's `genre`.
LISTED = ("card.genre",)


def _text_paths() -> tuple[str, ...]:
    paths = []
    for name, dtype in EVENT_FIELDS:
        if isinstance(dtype, T.StringType):
            paths.append(name)
        elif isinstance(dtype, T.StructType):
            paths += [f"{name}.{f.name}" for f in dtype.fields if isinstance(f.dataType, T.StringType)]
    return tuple(f"{p}[]" if p in LISTED else p for p in paths)


# The declared text fields, as `LineShape` checks them: a string, a number or null, never `true`,
# `false`, an object or a list (but a listed field's list of those). Spark renders any JSON value
# into a string field, so `from_json` alone would read `"user_id": true` as the user "true".
TEXT_FIELDS = _text_paths()
