"""Quantised building blocks: quantisers, trainable choices, N:M sparsity and the searchable layers."""
