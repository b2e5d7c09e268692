# The Section-4 toy model: GD on a width-1 depth-L linear net over a (gamma, eta) grid, one cube per
# toy model of the config. A few seconds of numpy: it runs on the submitting host.


rule simulate_toy:
    output:
        paths.TOY_CUBE,
    log:
        paths.LOG["simulate_toy"],
    wildcard_constraints:
        toy="|".join(PLAN.config.get("toy_models", {})) or "(?!)",
    localrule: True
    conda:
        ENV
    params:
        settings=lambda w: PLAN.config["toy_models"][w.toy],
    script:
        "../scripts/simulate_toy.py"
