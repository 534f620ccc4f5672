"""The NOC's collector: enrollment, heartbeats, presence history, inventory and the API."""

__version__ = "0.1.0"
