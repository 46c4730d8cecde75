"""`sgbus gateway`: the HTTPS front door for partners that run no Kafka client (publish, a
MESH-like mailbox with cursor and acknowledgement, per-event status), over mutual TLS."""
