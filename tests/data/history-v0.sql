-- The tables of a history.db as flux-mcp wrote them before retry attachment (schema version 0).
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL DEFAULT '',
    task_id TEXT,
    status TEXT NOT NULL,
    action TEXT,
    model TEXT,
    prompt TEXT,
    size TEXT,
    request TEXT NOT NULL,
    result TEXT,
    trace_id TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (task_id, owner)
);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (owner, created_at DESC);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
