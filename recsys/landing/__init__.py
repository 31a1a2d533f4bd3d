"""The landing zone: the contract's event types and the file layout producers write into."""
