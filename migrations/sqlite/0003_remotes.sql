-- Federation: remotes (configuration and the peer's mirror token), their sync state (written by
-- the sync worker, separately, so a config change never races a cursor update), and leases so
-- that only one replica syncs a remote at a time.
CREATE TABLE remotes (
    name         TEXT PRIMARY KEY NOT NULL,
    config       TEXT NOT NULL,
    token        TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE remote_state (
    name         TEXT PRIMARY KEY NOT NULL,
    state        TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE leases (
    name         TEXT PRIMARY KEY NOT NULL,
    holder       TEXT NOT NULL,
    expires_at   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX artefacts_origin_remote ON artefacts (json_extract(doc, '$.origin.remote'));
