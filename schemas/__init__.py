"""Pydantic models of sgbus events; no Kafka or Faust imports here."""
