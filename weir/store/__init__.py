"""The run database: SQLAlchemy Core tables, Alembic migrations and the SQL RunStore."""
