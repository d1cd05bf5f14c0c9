-- Resources: the JSON document is the truth; the columns beside it are what queries need.
CREATE TABLE resources (
    rid {PK_AUTO},
    id {TEXT_C} NOT NULL UNIQUE,
    resource_type {TEXT_C} NOT NULL,
    name_norm {TEXT_C} NOT NULL,
    external_id {TEXT_C},
    display TEXT,
    active BIGINT,
    version BIGINT NOT NULL,
    created {TEXT_C} NOT NULL,
    modified {TEXT_C} NOT NULL,
    doc TEXT NOT NULL,
    password_hash TEXT
);
CREATE UNIQUE INDEX resources_name ON resources (resource_type, name_norm);
CREATE INDEX resources_external_id ON resources (resource_type, external_id);
CREATE INDEX resources_created ON resources (resource_type, created);
CREATE INDEX resources_modified ON resources (resource_type, modified);
CREATE INDEX resources_type_rid ON resources (resource_type, rid);

-- One row per searchable value; multi-valued complex attributes also get one marker row per
-- value (value_text '') so that `emails[type eq "work" and value co "x"]` can require both
-- conditions of the same value.
CREATE TABLE attr_index (
    resource_rid BIGINT NOT NULL REFERENCES resources (rid) ON DELETE CASCADE,
    akey {TEXT_C} NOT NULL,
    elem BIGINT NOT NULL,
    value_text {TEXT_C} NOT NULL,
    value_num {DOUBLE},
    uniq BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX attr_index_lookup ON attr_index (akey, value_text, resource_rid);
CREATE INDEX attr_index_number ON attr_index (akey, value_num) WHERE value_num IS NOT NULL;
CREATE INDEX attr_index_resource ON attr_index (resource_rid, akey, elem);
-- uniqueness "server" for attributes other than userName / Group displayName
CREATE UNIQUE INDEX attr_index_unique ON attr_index (akey, value_text) WHERE uniq = 1;

-- Group membership: adding a member is one row, whatever the size of the group.
CREATE TABLE memberships (
    group_rid BIGINT NOT NULL REFERENCES resources (rid) ON DELETE CASCADE,
    member_rid BIGINT NOT NULL REFERENCES resources (rid) ON DELETE CASCADE,
    member_type {TEXT_C} NOT NULL,
    PRIMARY KEY (group_rid, member_rid)
);
CREATE INDEX memberships_member ON memberships (member_rid, group_rid);

-- The change feed: one row per committed change, in commit order.
CREATE TABLE changes (
    seq {PK_AUTO},
    at {TEXT_C} NOT NULL,
    resource_type {TEXT_C} NOT NULL,
    resource_id {TEXT_C} NOT NULL,
    op {TEXT_C} NOT NULL,
    old_version BIGINT,
    new_version BIGINT,
    attributes TEXT NOT NULL,
    members_added TEXT,
    members_removed TEXT,
    actor TEXT NOT NULL
);
CREATE INDEX changes_resource ON changes (resource_id, seq);

-- The audit trail; each row's hash covers the previous row's hash.
CREATE TABLE audit (
    seq {PK_AUTO},
    at {TEXT_C} NOT NULL,
    actor TEXT NOT NULL,
    source TEXT,
    layer {TEXT_C} NOT NULL,
    action {TEXT_C} NOT NULL,
    resource_type {TEXT_C},
    resource_id {TEXT_C},
    consumer {TEXT_C},
    outcome {TEXT_C} NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_resource ON audit (resource_id, seq);
CREATE INDEX audit_actor ON audit (actor, seq);

-- API bearer tokens: only the SHA-256 of the secret is kept.
CREATE TABLE api_tokens (
    id {TEXT_C} PRIMARY KEY,
    name {TEXT_C} NOT NULL UNIQUE,
    secret_hash {TEXT_C} NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    user_id {TEXT_C},
    created_at {TEXT_C} NOT NULL,
    last_used_at {TEXT_C},
    revoked_at {TEXT_C}
)
