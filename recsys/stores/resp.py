"""Redis commands encoded in RESP by Spark: the JVM half of the bulk load that
`recsys.stores.redis.HashLoader` finishes on each executor. Apart from the client so that
processes without Spark (the API) can use the client alone.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

# Redis's own guide to mass insertion recommends sending commands already encoded in RESP, its
# wire format, rather than building them one call at a time in a client library. Spark encodes
# the bulk of every command (`bulk_strings`, in the JVM, vectorized); an executor then only adds a
# short header per run of rows and streams Arrow's buffers to the socket unchanged (`HashLoader`).


def bulk_strings(*columns: Column) -> Column:
    """The columns' values as consecutive RESP bulk strings (`$<bytes>` CRLF `<value>` CRLF each), binary."""
    parts: list[Column] = []
    for c in columns:
        parts += [F.lit("$"), F.octet_length(c).cast("string"), F.lit("\r\n"), c, F.lit("\r\n")]
    return F.concat(*parts).cast("binary")
