"""Coupling of the scales: upscaling K~ from the network, compression Q_delta, coupling term R."""
