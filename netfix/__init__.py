"""netfix: declarative, reversible network tuning for Kubernetes nodes."""

__version__ = "0.1.0"
