# The related papers' experiments (config `related:`, gammasweep.related.experiments): small nets trained by
# (S)GD in several variants and seeds, one cube each. Seconds to minutes of CPU: they run on the
# submitting host.


rule simulate_related:
    output:
        paths.RELATED_CUBE,
    log:
        paths.LOG["simulate_related"],
    wildcard_constraints:
        related="|".join(PLAN.config.get("related", {})) or "(?!)",
    localrule: True
    conda:
        ENV
    params:
        spec=lambda w: PLAN.config["related"][w.related],
    script:
        "../scripts/simulate_related.py"
