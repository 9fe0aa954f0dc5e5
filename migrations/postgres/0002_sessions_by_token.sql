-- Sessions clustered on their token (D-042) is a SQLite change: there,
-- `sessions` becomes WITHOUT ROWID. PostgreSQL stores every table as a heap
-- with the primary-key index beside it, so nothing changes here; the version
-- exists so both dialects stay at the same schema version.
SELECT 1;
