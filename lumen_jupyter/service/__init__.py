"""The standalone Lumen service host."""
