# Every figure of the config is its own terminal rule, figure_<name>, reading only cubes.
# `snakemake --report results/report.html` collects them, captioned (workflow/report/).
# Figures are cheap: they run on the submitting host, never as cluster jobs.

for _name, _figure in config["figures"].items():

    rule:
        name:
            f"figure_{_name}"
        input:
            PLAN.figure_cubes(_name),
        output:
            pdf=paths.FIGURE.format(figure=_name, ext="pdf"),
            png=report(
                paths.FIGURE.format(figure=_name, ext="png"),
                caption="../report/figure.rst",
                category="Figures",
                labels={"figure": _name, "paper": _figure.get("paper", "-")},
            ),
            csv=paths.FIGURE.format(figure=_name, ext="csv"),
        log:
            paths.LOG["figure"].format(figure=_name),
        localrule: True
        conda:
            ENV
        params:
            plot=_figure["plot"],
            options=_figure.get("options", {}),
            title=_figure.get("title"),
            caption=PLAN.figure_caption(_name),
        script:
            "../scripts/plot_figure.py"
