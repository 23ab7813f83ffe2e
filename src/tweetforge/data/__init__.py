"""Posts in, frozen datasets out: sources read exports into Post records, ingest upserts them into the
store, clean applies versioned rules, snapshots freeze cleaned posts into immutable Parquet splits."""
