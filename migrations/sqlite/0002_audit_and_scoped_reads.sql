-- Mirror keys may be scoped by category, so tombstones remember the category they had.
ALTER TABLE tombstones ADD COLUMN category TEXT;

-- The audit log: every write, and every denied, conflicting or invalid write attempt.
CREATE TABLE audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT NOT NULL,
    action        TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    key_id        TEXT,
    key_name      TEXT,
    artefact_id   TEXT,
    architecture  TEXT,
    detail        TEXT,
    remote_addr   TEXT
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_action_id ON audit (action, id);
