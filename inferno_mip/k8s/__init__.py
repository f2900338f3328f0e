"""Kubernetes: collector and actuator on managed Deployments, and the optimizer operator."""
