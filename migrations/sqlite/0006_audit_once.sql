-- Audit entries the sync worker writes at most once: keyed by the peer's change, so a replica
-- that takes over a pass from one that died never records a mirrored artefact twice. Entries
-- without a key (NULL) are not constrained.
ALTER TABLE audit ADD COLUMN once_key TEXT;
CREATE UNIQUE INDEX audit_once_key ON audit (once_key);
