-- LDAP service accounts: bind as cn=NAME,ou=services,<base>. Only the argon2id hash of the
-- generated password is kept.
CREATE TABLE ldap_accounts (
    id {TEXT_C} PRIMARY KEY,
    name {TEXT_C} NOT NULL,
    name_norm {TEXT_C} NOT NULL UNIQUE,
    description TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at {TEXT_C} NOT NULL,
    last_bind_at {TEXT_C},
    revoked_at {TEXT_C}
)
