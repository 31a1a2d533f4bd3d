"""Bronze: raw, exactly-once copies of the landing zone and the accounts table. Holds PII."""
