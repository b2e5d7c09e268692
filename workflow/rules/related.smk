# The related papers' experiments (config `related:`, gammasweep.related.experiments): small nets trained by
# (S)GD in several variants and seeds, one cube each. Seconds to minutes of CPU: they run on the
# submitting host.


rule simulate_related:
    localrule: True
    output:
        paths.RELATED_CUBE,
    params:
        spec=lambda w: PLAN.config["related"][w.related],
    log:
        paths.LOG["simulate_related"],
    wildcard_constraints:
        related="|".join(PLAN.config.get("related", {})) or "(?!)",
    conda:
        ENV
    script:
        "../scripts/simulate_related.py"
