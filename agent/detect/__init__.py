"""Streaming anomaly detection: learned baselines (River) and the known threshold rules, once per period.

Pure apart from the pickled state: ``facts`` turns a period into plain
columns; each detector (``relays``, ``groups``, ``series``, ``rules``)
follows ``protocol`` (River's ``score_one``/``learn_one``) and declares its
own settings (``settings``); ``engine`` runs those in its ``DETECTORS``
tuple, scoring each period with all of them before any learns from it.
"""
