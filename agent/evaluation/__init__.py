"""Offline evaluation of the anomaly detectors on recorded history (not used by the running agent)."""
