-- One number that every change to a client or its secrets bumps, whoever makes it (a node, the
-- CLI, plain SQL): each node reads it to know when the clients it holds in memory are stale.
CREATE TABLE client_generation (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO client_generation (id, generation) VALUES (1, 0);

CREATE FUNCTION bump_client_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE client_generation SET generation = generation + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER clients_changed AFTER INSERT OR UPDATE OR DELETE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION bump_client_generation();
CREATE TRIGGER client_secrets_changed AFTER INSERT OR UPDATE OR DELETE ON client_secrets
    FOR EACH STATEMENT EXECUTE FUNCTION bump_client_generation();
