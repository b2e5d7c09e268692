"""Theory: the paper's Section-4 toy model, closed forms and a GD simulation."""
