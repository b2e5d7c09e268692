"""The plan: the config loaded and validated, expanded into cells, packs, columns and the path of every
file the workflow makes. Imports no torch: the Snakefile parses with it."""
