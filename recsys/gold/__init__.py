"""Gold: features and the implicit-feedback matrix, each built as of a point in time."""
