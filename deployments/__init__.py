"""Deployment entry points: ``python -m deployments.serve`` runs every flow in one long-lived process."""
