-- Portcullis initial schema. Shared rules for both backends: ids are TEXT UUIDs (v7 where
-- ordering helps), times are BIGINT seconds since the Unix epoch (UTC), lists are JSON arrays
-- in TEXT, secrets are stored only as hashes, private keys only encrypted.

CREATE TABLE users (
    id                       TEXT PRIMARY KEY,
    username                 TEXT NOT NULL UNIQUE,
    email                    TEXT,
    email_verified           BOOLEAN NOT NULL DEFAULT FALSE,
    display_name             TEXT,
    password_hash            TEXT,
    password_change_required BOOLEAN NOT NULL DEFAULT FALSE,
    status                   TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    totp_secret_enc          TEXT,
    totp_enabled_at          BIGINT,
    totp_last_step           BIGINT,
    created_at               BIGINT NOT NULL,
    updated_at               BIGINT NOT NULL
);
CREATE INDEX users_email ON users (email);

CREATE TABLE user_recovery_codes (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX user_recovery_codes_user ON user_recovery_codes (user_id);

CREATE TABLE roles (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    builtin     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);
INSERT INTO roles (id, name, description, builtin, created_at)
VALUES ('00000000-0000-7000-8000-000000000001', 'admin', 'Full access to the admin UI and API', TRUE, 0);

CREATE TABLE user_roles (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id    TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, role_id)
);
CREATE INDEX user_roles_role ON user_roles (role_id);

CREATE TABLE clients (
    id                        TEXT PRIMARY KEY,
    name                      TEXT NOT NULL UNIQUE,
    redirect_uris             TEXT NOT NULL,
    post_logout_redirect_uris TEXT NOT NULL,
    grant_types               TEXT NOT NULL,
    auth_method               TEXT NOT NULL,
    allowed_scopes            TEXT NOT NULL,
    first_party               BOOLEAN NOT NULL DEFAULT FALSE,
    require_pkce              BOOLEAN NOT NULL DEFAULT TRUE,
    access_token_ttl          BIGINT NOT NULL,
    id_token_ttl              BIGINT NOT NULL,
    refresh_token_ttl         BIGINT NOT NULL,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL
);

-- A client may hold two valid secrets while one is rotated.
CREATE TABLE client_secrets (
    id          TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX client_secrets_client ON client_secrets (client_id);

-- Server-side login sessions; the cookie carries a random value, the table its hash.
CREATE TABLE login_sessions (
    id                TEXT PRIMARY KEY,
    token_hash        TEXT NOT NULL UNIQUE,
    user_id           TEXT REFERENCES users (id) ON DELETE CASCADE,
    stage             TEXT NOT NULL,
    authenticated_at  BIGINT,
    amr               TEXT NOT NULL DEFAULT '[]',
    csrf_token_hash   TEXT NOT NULL,
    ip                TEXT,
    user_agent        TEXT,
    created_at        BIGINT NOT NULL,
    last_seen_at      BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    revoked_at        BIGINT
);
CREATE INDEX login_sessions_user ON login_sessions (user_id);
CREATE INDEX login_sessions_expires ON login_sessions (expires_at);

CREATE TABLE consents (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
CREATE INDEX consents_client ON consents (client_id);

-- One grant per authorization: the code and every refresh token descended from it (the
-- refresh-token family). Revoking the grant revokes them all, and its access tokens.
CREATE TABLE grants (
    id            TEXT PRIMARY KEY,
    client_id     TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    user_id       TEXT REFERENCES users (id) ON DELETE CASCADE,
    session_id    TEXT REFERENCES login_sessions (id) ON DELETE SET NULL,
    scope         TEXT NOT NULL,
    auth_time     BIGINT,
    amr           TEXT NOT NULL DEFAULT '[]',
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    revoke_reason TEXT
);
CREATE INDEX grants_client ON grants (client_id);
CREATE INDEX grants_user ON grants (user_id);

CREATE TABLE authorization_codes (
    code_hash             TEXT PRIMARY KEY,
    grant_id              TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    redirect_uri          TEXT NOT NULL,
    nonce                 TEXT,
    code_challenge        TEXT,
    code_challenge_method TEXT,
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL,
    consumed_at           BIGINT
);
CREATE INDEX authorization_codes_grant ON authorization_codes (grant_id);
CREATE INDEX authorization_codes_expires ON authorization_codes (expires_at);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    grant_id    TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    parent_hash TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

-- Access tokens are stateless JWTs; only the ids of revoked ones are kept, until they expire.
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expires ON revoked_tokens (expires_at);

-- Private keys are encrypted (AEAD) under the master key, with the kid as associated data.
CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY,
    alg             TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('next', 'current', 'retired', 'revoked')),
    public_jwk      TEXT NOT NULL,
    private_key_enc TEXT NOT NULL,
    master_key_id   TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    activates_at    BIGINT,
    retired_at      BIGINT,
    remove_after    BIGINT
);
CREATE INDEX signing_keys_alg_state ON signing_keys (alg, state);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- Append-only and hash-chained: each row's hash covers its fields and the previous row's hash.
-- Actor and subject are plain text, not foreign keys: the trail outlives what it names.
CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    occurred_at BIGINT NOT NULL,
    event_type  TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    actor       TEXT,
    subject     TEXT,
    client_id   TEXT,
    source_ip   TEXT,
    user_agent  TEXT,
    request_id  TEXT,
    details     TEXT NOT NULL DEFAULT '{}',
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (occurred_at);
CREATE INDEX audit_events_type ON audit_events (event_type);
