"""edgeward: a native-accelerated edge gateway for signed gRPC commands and events."""

__version__ = "0.1.0"
