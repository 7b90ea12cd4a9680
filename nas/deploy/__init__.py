"""Deployment: the integer network, weight packing, export formats, runtimes and calibration against them."""
