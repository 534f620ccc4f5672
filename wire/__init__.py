"""The wire format shared by the agent and the collector.

This package is installed with the agent, so it imports nothing from `collector` or `billing`.
"""
