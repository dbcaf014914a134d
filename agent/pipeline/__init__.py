"""The one way a period goes through: judge (pure) and record (effects), and the state file's schema."""
