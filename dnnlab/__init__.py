"""dnnlab: train a YAML-configured network with JAX and tell failed training from overfitting."""

__version__ = "0.1.0"
