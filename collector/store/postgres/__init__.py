"""The engine for fleets that outgrow one machine (see `collector.store.postgres.engine`)."""
