"""Reports mailed to subscribers: once a month, what each watched relay's month was (docs/reports.md)."""
