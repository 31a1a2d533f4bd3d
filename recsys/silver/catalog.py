"""`silver/events` -> `silver/artists` and `silver/tracks`: one row per artist and per track,
maintained from each batch's aggregates rather than rebuilt from all history.

Names: the most frequent clean display form across events (ties: the latest seen, then the
smallest), so stray case and punctuation from one client lose to the catalog's own spelling.
Genres and the displayed rank, followers and likes come from the latest event that carried them
(ties: the smallest value).

Both rules need only, per (artist or track, field, value): how many events carried the value and
when it was last seen. `silver/catalog_values` keeps exactly that. Each silver batch adds its new
events' counts with one MERGE (sums and maxima combine), forgetting a user recounts the artists
and tracks their events touched, and the catalog tables are derived from `silver/catalog_values`,
whose size follows the catalog, not the history. `catalog_values(all events)` gives the same
table, so a rebuild from scratch and the incremental path meet in the same place.
"""

from __future__ import annotations

import functools

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.tables import ARTIST_ID, EVENT_TIME, SILVER_CATALOG_VALUES, TRACK_ID

SEEN = "_seen"  # a field every event carries: its count is the events seen, its time `last_seen`
# (kind, key column, fields picked by frequency, fields picked by recency)
_ARTIST = ("artist", ARTIST_ID, ("artist_name", "artist_key"), ("genres", "artist_rank", "artist_followers"))
_TRACK = ("track", TRACK_ID, ("track_name", "track_key", ARTIST_ID, "album_name", "duration_ms"), ("track_likes",))
_TYPES = {"genres": "array<string>", "artist_rank": "bigint", "artist_followers": "bigint",
          "duration_ms": "bigint", "track_likes": "bigint"}
CATALOG_KEY = SILVER_CATALOG_VALUES.key
_MATCH = " AND ".join(f"t.{k} = s.{k}" for k in CATALOG_KEY)  # a MERGE's target row for a source row


def _as_text(field: str) -> Column:
    """A field's value as the text `silver/catalog_values` stores (arrays as JSON, empty as missing)."""
    if field == "genres":
        return F.when(F.size("genres") > 0, F.to_json("genres"))
    return F.col(field).cast("string")


def _typed(field: str) -> Column:
    kind = _TYPES.get(field)
    if kind == "array<string>":
        return F.from_json(F.col(field), kind)
    return F.col(field).cast(kind) if kind else F.col(field)


def catalog_values(events: DataFrame, specs: tuple = (_ARTIST, _TRACK)) -> DataFrame:
    """Silver events -> `silver/catalog_values` rows: (kind, id, field, value, n, last_seen)."""
    parts = []
    for kind, key, frequent, latest in specs:
        rows = events.filter(F.col(key).isNotNull())
        pairs = [F.struct(F.lit(SEEN).alias("field"), F.lit("").alias("value"))]
        pairs += [F.struct(F.lit(f).alias("field"), _as_text(f).alias("value")) for f in (*frequent, *latest)]
        exploded = rows.select(F.col(key).alias("id"), EVENT_TIME, F.explode(F.array(*pairs)).alias("p"))
        parts.append(exploded.filter(F.col("p.value").isNotNull()).select(
            F.lit(kind).alias("kind"), "id", "p.field", "p.value", EVENT_TIME))
    union = functools.reduce(DataFrame.unionByName, parts)
    return union.groupBy(*CATALOG_KEY).agg(F.count("*").alias("n"), F.max(EVENT_TIME).alias("last_seen"))


def add_values(values: DataFrame, path: str) -> None:
    """MERGE one batch's `catalog_values` into the table: counts add up, last-seen times take the maximum."""
    spark = values.sparkSession
    lake.ensure_table(spark, path)
    (DeltaTable.forPath(spark, path).alias("t").merge(lake.conform(values, path).alias("s"), _MATCH)
     .whenMatchedUpdate(set={"n": "t.n + s.n", "last_seen": "greatest(t.last_seen, s.last_seen)"})
     .whenNotMatchedInsertAll().execute())


def recount(spark: SparkSession, path: str, remaining: DataFrame, touched: DataFrame) -> None:
    """Replace, in one commit, the rows of the (kind, id)s in `touched` by their counts over
    `remaining` events: values no remaining event carries are deleted. For forgetting users.
    """
    fresh = catalog_values(remaining).join(touched, on=["kind", "id"], how="left_semi")
    stored = lake.read(spark, path).join(touched, on=["kind", "id"], how="left_semi").select(*CATALOG_KEY)
    source = stored.join(fresh, on=list(CATALOG_KEY), how="left").select(
        *CATALOG_KEY, F.coalesce("n", F.lit(0)).alias("n"), "last_seen")
    (DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), _MATCH)
     .whenMatchedDelete("s.n = 0")
     .whenMatchedUpdate(set={"n": "s.n", "last_seen": "s.last_seen"})
     .execute())


def touched_by(events: DataFrame) -> DataFrame:
    """The (kind, id)s of artists and tracks that `events` carry."""
    def ids(kind: str, key: str) -> DataFrame:
        return events.filter(F.col(key).isNotNull()).select(F.lit(kind).alias("kind"), F.col(key).alias("id"))

    return ids("artist", ARTIST_ID).unionByName(ids("track", TRACK_ID)).distinct()


def _derive(values: DataFrame, spec: tuple) -> DataFrame:
    kind, key, frequent, latest = spec
    rows = values.filter(F.col("kind") == kind)
    # The smallest of these structs is the value each rule picks: most events, then latest seen,
    # then smallest value, for names; latest seen, then smallest value, for the rest. One
    # aggregation per id picks every field's value (no sort of the values).
    later = -F.unix_micros("last_seen")

    def pick(f: str) -> Column:
        first = -F.col("n") if f in frequent else F.lit(0).cast("bigint")
        return F.min(F.when(F.col("field") == f, F.struct(first, later, F.col("value"))))["value"].alias(f)

    wide = rows.filter(F.col("field").isin(*frequent, *latest)).groupBy("id").agg(
        *[pick(f) for f in (*frequent, *latest)])
    seen = rows.filter(F.col("field") == SEEN).select("id", "last_seen")
    return seen.join(wide, on="id", how="left").withColumnRenamed("id", key).select(
        key, *[_typed(f).alias(f) for f in (*frequent, *latest)], "last_seen")


def artists_from(values: DataFrame) -> DataFrame:
    """`silver/artists` from `silver/catalog_values`."""
    out = _derive(values, _ARTIST)
    return out.select(ARTIST_ID, "artist_name", "artist_key",
                      F.coalesce("genres", F.array().cast("array<string>")).alias("genres"),
                      "artist_rank", "artist_followers", "last_seen")


def tracks_from(values: DataFrame) -> DataFrame:
    """`silver/tracks` from `silver/catalog_values`."""
    return _derive(values, _TRACK).select(TRACK_ID, "track_name", "track_key", ARTIST_ID, "album_name",
                                          "duration_ms", "track_likes", "last_seen")


def to_artists(events: DataFrame) -> DataFrame:
    """One row per artist in `events`: its most frequent name and key, latest genres, rank and followers."""
    return artists_from(catalog_values(events, (_ARTIST,)))


def to_tracks(events: DataFrame) -> DataFrame:
    """One row per track in `events`: its most frequent name, key, artist, album and duration, latest likes."""
    return tracks_from(catalog_values(events, (_TRACK,)))


def narrow_specs(fields: dict[str, tuple[str, ...]]) -> tuple:
    """The specs `catalog_values` and `catalog_fields_from` take for only some fields of each kind
    (`{"artist": ("artist_name", "genres"), ...}`): a reader that needs two of the catalog's fields
    (gold's names and genres over its window) explodes each event into three rows instead of six.
    """
    specs = {spec[0]: spec for spec in (_ARTIST, _TRACK)}
    narrow = []
    for kind, wanted in fields.items():
        if kind not in specs:
            raise ValueError(f"catalog kind must be one of {sorted(specs)}, got {kind!r}")
        _, key, frequent, latest = specs[kind]
        unknown = set(wanted) - {*frequent, *latest}
        if unknown:
            raise ValueError(f"{kind} catalog has no fields {sorted(unknown)}")
        narrow.append((kind, key, tuple(f for f in frequent if f in wanted), tuple(f for f in latest if f in wanted)))
    return tuple(narrow)


def catalog_fields_from(values: DataFrame, specs: tuple, kind: str) -> DataFrame:
    """One row per artist or track (`kind`) in `values` (`catalog_values` with `specs`) with only
    the spec's fields (and `last_seen`), each picked by the rule `to_artists` and `to_tracks` use,
    and values as they would type them.
    """
    (spec,) = [s for s in specs if s[0] == kind]
    return _derive(values, spec)


def catalog_fields(events: DataFrame, kind: str, fields: tuple[str, ...]) -> DataFrame:
    """`catalog_fields_from` the values of `events` for `fields` of `kind` only."""
    specs = narrow_specs({kind: fields})
    return catalog_fields_from(catalog_values(events, specs), specs, kind)
