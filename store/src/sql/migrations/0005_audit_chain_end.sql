-- The audit chain proves its end, not only its middle.
--
-- change_seq: the change-feed row an audit row records (writes of Users and Groups; NULL for
-- every other row). Each write commits exactly one change row and one audit row, so
-- `audit verify` can require that every change row after the retention anchor has its
-- audit row: deleting the newest audit rows leaves their change rows behind.
-- hash_mode: how the row's hash was computed. NULL marks the rows written before this
-- migration (SHA-256 over the fields, without change_seq); "sha256" and
-- "hmac-sha256:<key id>" are the current format, which also covers change_seq and the
-- mode itself, unkeyed or keyed with `audit.chain_key_file`.
ALTER TABLE audit ADD COLUMN change_seq BIGINT;
ALTER TABLE audit ADD COLUMN hash_mode {TEXT_C};

-- Existing rows are linked to their change rows: record_write gave both the same timestamp,
-- resource and operation, and wrote them in the same order, so the n-th audit row of a
-- (timestamp, resource, action) pairs with the n-th change row of it. Their hashes do not
-- cover the link, so this does not disturb verification.
UPDATE audit SET change_seq = l.cseq FROM (
    SELECT a.seq AS aseq, c.seq AS cseq
    FROM (
        SELECT seq, at, resource_type, resource_id, action,
               ROW_NUMBER() OVER (PARTITION BY at, resource_type, resource_id, action ORDER BY seq) AS n
        FROM audit
        WHERE resource_type IS NOT NULL AND resource_id IS NOT NULL
    ) a
    JOIN (
        SELECT seq, at, resource_type, resource_id, LOWER(resource_type) || '.' || op AS action,
               ROW_NUMBER() OVER (PARTITION BY at, resource_type, resource_id, op ORDER BY seq) AS n
        FROM changes
    ) c
    ON c.at = a.at AND c.resource_type = a.resource_type AND c.resource_id = a.resource_id
       AND c.action = a.action AND c.n = a.n
) AS l
WHERE l.aseq = audit.seq;

CREATE UNIQUE INDEX audit_change ON audit (change_seq);

-- through_change_seq: change rows up to here need no audit row (theirs were pruned). For
-- anchors made before this migration: every change row before the oldest one still linked.
ALTER TABLE audit_anchor ADD COLUMN through_change_seq BIGINT NOT NULL DEFAULT 0;
UPDATE audit_anchor SET through_change_seq = COALESCE(
    (SELECT MAX(c.seq) FROM changes c
     WHERE c.seq < COALESCE((SELECT MIN(a.change_seq) FROM audit a),
                            (SELECT MAX(c2.seq) + 1 FROM changes c2))),
    0)
