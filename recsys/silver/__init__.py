"""Silver: clean, deduplicated, normalized, pseudonymous. No PII of any kind past this point."""
