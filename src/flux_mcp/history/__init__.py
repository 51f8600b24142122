"""The history of every task: its rules, its rows, the backend shape, SQLite and PostgreSQL."""
