"""Data: sources (fetch + checksums), preprocess (raw -> arrays), datamodules (Lightning)."""
