"""The one SQL store every stage uses (SQLAlchemy 2 Core: SQLite by default, PostgreSQL by URL): the
schema, the engine, and the Alembic migrations that bring an existing data home up to date."""
