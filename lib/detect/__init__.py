"""The detect stage."""
