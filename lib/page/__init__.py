"""The page stage."""
