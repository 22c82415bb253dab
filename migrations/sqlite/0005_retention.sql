-- Branch retention (v1.1). Slot history needs no table: it lives in the document, so it is
-- written in the same compare-and-swap as the slots and travels to mirrors with them.

-- When each artefact was last downloaded. Written in the background, debounced, and kept apart
-- from the document so that a download never changes a revision (or an ETag).
CREATE TABLE downloads (
    id                  TEXT PRIMARY KEY NOT NULL,
    last_downloaded_at  TEXT NOT NULL
) WITHOUT ROWID;

-- Retention walks branch artefacts by how long their bytes have been unchanged.
CREATE INDEX artefacts_kind_data_updated
    ON artefacts (kind, json_extract(doc, '$.dataUpdatedAt'));
