"""What drives the pipeline: once, the daemon (scheduler, runner), collect (fetch + parse -> Snapshot) and backfill."""
