# Every figure of the config is its own terminal rule, figure_<name>, reading only cubes.
# `snakemake --report results/report.html` collects them, captioned (workflow/report/).
# Figures are cheap: they run on the submitting host, never as cluster jobs.

for _name, _figure in config["figures"].items():

    rule:
        name:
            f"figure_{_name}"
        localrule: True
        input:
            PLAN.figure_cubes(_name),
        output:
            pdf=f"results/figures/{_name}.pdf",
            png=report(
                f"results/figures/{_name}.png",
                caption="../report/figure.rst",
                category="Figures",
                labels={"figure": _name, "paper": _figure.get("paper", "-")},
            ),
            csv=f"results/figures/{_name}.csv",
        params:
            plot=_figure["plot"],
            options=_figure.get("options", {}),
            title=_figure.get("title"),
            caption=PLAN.figure_caption(_name),
        log:
            f"results/logs/figures/{_name}.log",
        conda:
            ENV
        script:
            "../scripts/plot_figure.py"
