"""Probes: measurements during training (sharpness, spectra, NTK, alignment, ...) and the linear
algebra under them."""
