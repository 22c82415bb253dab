-- Trusted publishing: the publishers an admin configured, and the OIDC token ids (`jti`)
-- already exchanged, each kept until its token expires so that no token is accepted twice,
-- whichever replica it reaches.
CREATE TABLE trusted_publishers (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE oidc_token_ids (
    token_id TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX oidc_token_ids_expiry ON oidc_token_ids (expires_at);
