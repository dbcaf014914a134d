"""Alerts: findings and relay events turned into notices with a life cycle, routed and delivered."""
