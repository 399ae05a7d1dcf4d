"""dexwm: action-conditioned latent video world models for dexterous manipulation."""

__version__ = "0.1.0"
