"""Watching the platform from outside: the broker exporter (`plantwatch serve broker-exporter`)."""
