"""Operators' tooling: the local Prometheus and Alertmanager, scrape targets, lag, dashboards, `sgbus status`."""
