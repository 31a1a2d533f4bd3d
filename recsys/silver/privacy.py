"""Where PII stops: pseudonymous user keys, age groups, and coordinates coarsened to places.

- `user_key` = HMAC-SHA-256(`privacy.pseudonym_secret`, user_id), hex. The secret travels to
  executors in a broadcast variable read inside a pandas UDF, never as a literal: a literal
  would be printed in query plans, `EXPLAIN` output and the Spark UI.
- `age_group` uses the contract's buckets, computed for the run date.
- Coordinates become city / region / country (ISO code) by offline reverse geocoding
  (`reverse-geocode`, which ships the GeoNames gazetteer); each Python worker loads the index
  once. Only places with at least `privacy.geo_min_population` people are candidates, so a
  small town maps to its nearest sizable city, coarsening locations further.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date

import pandas as pd
import reverse_geocode
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.functions import pandas_udf

from recsys.keys import pseudonym_from_key

AGE_GROUPS = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"), (65, "55-64"))
PLACE = T.StructType([T.StructField(n, T.StringType()) for n in ("city", "region", "country")])


def pseudonymizer(spark: SparkSession, secret: str) -> Callable[[Column], Column]:
    """A column function `user_id -> user_key`; the secret is broadcast, not embedded."""
    key = spark.sparkContext.broadcast(secret.encode("utf-8"))

    @pandas_udf("string")  # type: ignore[call-overload]  # pyspark's overloads do not match pandas-stubs' Series
    def pseudonymize(user_ids: pd.Series) -> pd.Series:
        k = key.value
        return user_ids.map(lambda uid: None if uid is None else pseudonym_from_key(k, uid))

    return pseudonymize


def age_group(date_of_birth: Column, today: date) -> Column:
    """Contract buckets from a birth date, as of `today`; `unknown` when NULL."""
    years = F.floor(F.months_between(F.lit(today), date_of_birth) / 12)
    expr = F.when(date_of_birth.isNull(), F.lit("unknown"))
    for upper, label in AGE_GROUPS:
        expr = expr.when(years < upper, F.lit(label))
    return expr.otherwise(F.lit("65+"))


def with_age_group(today: date, birth_col: str = "date_of_birth",
                   out_col: str = "age_group") -> Callable[[DataFrame], DataFrame]:
    """A transform adding the age group on `today` from a birth date column."""
    def transform(df: DataFrame) -> DataFrame:
        return df.withColumn(out_col, age_group(F.col(birth_col), today))

    return transform


@functools.lru_cache(maxsize=4)
def _gazetteer(min_population: int) -> reverse_geocode.GeocodeData:
    return reverse_geocode.GeocodeData(min_population)


def geocoder(min_population: int) -> Callable[[Column, Column], Column]:
    """A column function `(lat, lon) -> struct(city, region, country)`, NULL without coordinates."""

    @pandas_udf(PLACE)  # type: ignore[call-overload]
    def reverse_geocode(lat: pd.Series, lon: pd.Series) -> pd.DataFrame:
        out = pd.DataFrame({"city": None, "region": None, "country": None}, index=lat.index, dtype="object")
        known = lat.notna() & lon.notna()
        if known.any():
            places = _gazetteer(min_population).query(list(zip(lat[known], lon[known], strict=True)))
            out.loc[known, "city"] = [p.get("city") for p in places]
            out.loc[known, "region"] = [p.get("state") for p in places]
            out.loc[known, "country"] = [p.get("country_code") for p in places]
        return out

    return reverse_geocode
