"""`bronze/accounts` -> `silver/users`: one current row per account, without PII.

Rebuilt whole on every run (one row per account is small), so an account deleted from bronze
disappears here on the same run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys.silver.privacy import with_age_group
from recsys.tables import USER_ID, USER_KEY

USER_COLUMNS = (USER_KEY, "age_group", "city", "region", "country", "signup_date", "updated_at")


def to_silver_users(accounts: DataFrame, *, pseudonymize: Callable, geocode: Callable, today: date) -> DataFrame:
    """Accounts (with PII) -> users (pseudonymous key, age group, place, signup date)."""
    place = geocode(F.col("latitude"), F.col("longitude"))
    return (
        accounts.transform(with_age_group(today))
        .withColumn(USER_KEY, pseudonymize(F.trim(USER_ID)))
        .withColumn("_place", place)
        .select(
            USER_KEY,
            "age_group",
            F.col("_place.city").alias("city"),
            F.col("_place.region").alias("region"),
            F.coalesce(F.col("_place.country"), F.upper(F.trim("country_code"))).alias("country"),
            F.to_date("signup_at").alias("signup_date"),
            "updated_at",
        )
    )
