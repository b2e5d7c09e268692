"""Results: cell files, curves and probe records, cubes, their analysis (eta*, eta_max, fits),
provenance and atomic output. Imports no torch: figures read results without it."""
