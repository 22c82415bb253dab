-- Garbage collection is mark-and-sweep across runs: a blob is first marked when found
-- unreferenced, and deleted only by a later run, once it has stayed unreferenced for the
-- grace period.
CREATE TABLE gc_marks (
    sha256       TEXT PRIMARY KEY NOT NULL,
    marked_at    INTEGER NOT NULL
) WITHOUT ROWID;
