"""The embedded engine: one SQLite file in WAL mode (see `collector.store.sqlite.engine`)."""
