"""Grafana dashboards as code (grafana-foundation-sdk), in a Prometheus and an InfluxDB flavour."""
