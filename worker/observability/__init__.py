"""Logs, metrics, `/healthz` and systemd notifications."""
