"""deferred-emulator: a local App Engine push task queue and Cloud Tasks v2 emulator."""

__version__ = "0.1.0"

__all__ = ["__version__"]
