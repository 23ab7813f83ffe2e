"""The SQL store (SQLAlchemy 2 Core: SQLite by default, PostgreSQL by URL) and dataset snapshots."""
