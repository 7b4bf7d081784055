DROP TRIGGER client_secrets_changed ON client_secrets;
DROP TRIGGER clients_changed ON clients;
DROP FUNCTION bump_client_generation();
DROP TABLE client_generation;
