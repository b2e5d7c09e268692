"""Data: the real sources and their published formats, downloads, the diffusion generator of MNIST-1M
and its quality gate, the pools and the online stream, augmentation."""
