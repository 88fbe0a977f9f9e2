"""sfuctl: a WebRTC Selective Forwarding Unit and the tools to load-test it."""

__version__ = "0.1.0"
