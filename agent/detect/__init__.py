"""Streaming anomaly detection: learned baselines (River) and the known threshold rules, once per period.

Pure apart from ``state`` (the pickle file): ``facts`` turns a period into
plain columns, ``baseline``/``relays``/``groups``/``rules`` judge it and
``engine`` runs them in order, scoring each period before learning from it.
"""
