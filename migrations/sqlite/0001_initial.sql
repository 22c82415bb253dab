-- Artefact documents are stored whole as JSON; the columns beside them exist for lookups,
-- ordering and the federation filter.
CREATE TABLE artefacts (
    id           TEXT PRIMARY KEY NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('release', 'branch')),
    category     TEXT,
    search       TEXT NOT NULL,
    seq          INTEGER NOT NULL UNIQUE,
    revision     INTEGER NOT NULL,
    doc          TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX artefacts_kind_id ON artefacts (kind, id);
CREATE INDEX artefacts_category_id ON artefacts (category, id);

-- What remains of a deleted artefact, so mirrors can follow deletions by seq.
CREATE TABLE tombstones (
    id           TEXT PRIMARY KEY NOT NULL,
    kind         TEXT NOT NULL,
    seq          INTEGER NOT NULL UNIQUE,
    revision     INTEGER NOT NULL,
    deleted_at   TEXT NOT NULL
) WITHOUT ROWID;

-- The registry-wide change sequence: incremented in the same transaction as every change.
CREATE TABLE counters (
    name         TEXT PRIMARY KEY NOT NULL,
    value        INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES ('seq', 0);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL,
    revoked_at   TEXT,
    doc          TEXT NOT NULL
) WITHOUT ROWID;
