"""Verifies authenticated relay operator IDs (AROI): fetches uri-rsa and dns-rsa proofs, keeps them in a ProofBook."""
