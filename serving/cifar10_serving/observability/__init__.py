"""What the server shows of itself: Prometheus metrics and HTTP health probes."""
