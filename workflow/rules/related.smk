# The related papers' experiments (config `related:`, gammasweep.related): small nets trained by
# (S)GD in several variants and seeds, one cube each. Seconds to minutes of CPU: they run on the
# submitting host.


rule simulate_related:
    localrule: True
    output:
        "results/cubes/related/{related}.nc",
    params:
        spec=lambda w: PLAN.config["related"][w.related],
    log:
        "results/logs/related/{related}.log",
    wildcard_constraints:
        related="|".join(PLAN.config.get("related", {})) or "(?!)",
    conda:
        ENV
    script:
        "../scripts/simulate_related.py"
