"""What each workflow rule does, one module per group of rules (workflow/rules/): data, train,
aggregate, simulate."""
