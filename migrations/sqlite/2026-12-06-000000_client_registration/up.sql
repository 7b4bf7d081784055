-- A client that registered itself (RFC 7591) manages its registration with a token of its
-- own (RFC 7592), kept here as a hash; it goes with the client.
CREATE TABLE client_registrations (
    client_id  TEXT PRIMARY KEY REFERENCES clients (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL
);
