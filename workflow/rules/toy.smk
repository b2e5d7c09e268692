# The Section-4 toy model: GD on a width-1 depth-L linear net over a (gamma, eta) grid, one cube per
# toy model of the config. A few seconds of numpy: it runs on the submitting host.


rule simulate_toy:
    localrule: True
    output:
        paths.TOY_CUBE,
    params:
        settings=lambda w: PLAN.config["toy_models"][w.toy],
    log:
        paths.LOG["simulate_toy"],
    wildcard_constraints:
        toy="|".join(PLAN.config.get("toy_models", {})) or "(?!)",
    conda:
        ENV
    script:
        "../scripts/simulate_toy.py"
