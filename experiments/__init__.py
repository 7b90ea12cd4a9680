"""Hydra apps that wire data, supernets, cost models, search and tracking together."""
