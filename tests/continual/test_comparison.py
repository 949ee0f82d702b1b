"""The comparison of hand-made runs: names, mean and std over seeds, the chosen rate, the Pareto frontier, tables."""

import csv
import io
import math
import statistics

import pytest

from hf_hope.continual import comparison, pareto


def run(strategy, plasticity, forgetting, finals, *, rate=1e-4, seconds=1.0, **extra):
    summary = {
        "num_tasks": 2,
        "final_average": sum(finals) / len(finals),
        "final_per_task": finals,
        "plasticity": plasticity,
        "forgetting": forgetting,
        "relative_forgetting": forgetting / 10,
        "backward_transfer": -forgetting,
        **extra,
    }
    settings = {"strategy": strategy, "learning_rate": rate}
    return {"strategy": strategy, "settings": settings, "summary": summary, "timings": [{"train_seconds": seconds}]}


def experiment(runs, higher_is_better=False):
    values = {"metric": "accuracy" if higher_is_better else "perplexity", "higher_is_better": higher_is_better}
    values.update(tasks=["a", "b"], runs=runs)
    values["comparison"] = comparison.comparison_rows(values)
    values["groups"] = comparison.group_rows(values["comparison"])
    values["chosen"] = comparison.choose_learning_rates(values["groups"], higher_is_better)
    return values


def group(name, strategy, plasticity, forgetting, *, relative=None, rate=1e-4):
    mean = {"plasticity": plasticity, "forgetting": forgetting, "relative_forgetting": relative}
    return {"group": name, "strategy": strategy, "learning_rate": rate, "mean": mean, "std": dict.fromkeys(mean)}


def test_run_names_split_into_group_and_seed():
    assert comparison.split_run_name("full-lr3e-05/seed_12") == ("full-lr3e-05", 12)
    assert comparison.split_run_name("cms") == ("cms", None)
    for bad in ("full/seed_", "full/seed_01", "full/seed_x", "a/b", "/seed_0", "full/seed_0/seed_1", "-x"):
        with pytest.raises(ValueError, match="not usable as a folder name"):
            comparison.split_run_name(bad)


def test_the_mean_and_sample_std_over_seeds_match_a_hand_computation():
    runs = {
        "full/seed_0": run("full", 10.0, 1.0, [11.0, 12.0], retention=0.5, seconds=2.0),
        "full/seed_1": run("full", 12.0, 2.0, [13.0, 12.0], retention=0.7, seconds=4.0),
        "full/seed_2": run("full", 14.0, 6.0, [15.0, 15.0], retention=0.9, seconds=6.0),
        "cms/seed_0": run("cms", 20.0, 0.5, [21.0, 22.0], retention=0.1),
    }
    result = experiment(runs)
    full, cms = result["groups"]
    assert full["group"] == "full" and full["runs"] == ["full/seed_0", "full/seed_1", "full/seed_2"]
    assert full["seeds"] == [0, 1, 2] and full["learning_rate"] == 1e-4
    assert full["mean"]["plasticity"] == 12.0 and full["std"]["plasticity"] == 2.0  # sqrt((4 + 0 + 4) / 2)
    assert full["mean"]["forgetting"] == 3.0 and full["std"]["forgetting"] == pytest.approx(math.sqrt(7))
    assert full["mean"]["final_a"] == 13.0 and full["std"]["final_b"] == pytest.approx(statistics.stdev([12, 12, 15]))
    assert full["mean"]["train_seconds"] == 4.0
    # a figure the summary gains later (here `retention`) is aggregated too, with no change to the code
    assert full["mean"]["retention"] == pytest.approx(0.7) and full["std"]["retention"] == pytest.approx(0.2)
    assert full["mean"]["forward_transfer"] is None and full["std"]["forward_transfer"] is None  # not measured
    assert cms["mean"]["plasticity"] == 20.0 and cms["std"]["plasticity"] is None  # one seed: std None, not 0
    assert comparison.mean_std([1.0, None, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert comparison.mean_std([None]) == (None, None)

    table = comparison.format_comparison(result)
    assert "| full | 13 ± 1.803 | 30.0% ± 26.5% | 3 ± 2.646 | -3 ± 2.646 | - | 12 ± 2 | 0.7 ± 0.2 |" in table
    assert "| cms | 21.5 | 5.0% | 0.5 | -0.5 | - | 20 | 0.1 | 21 | 22 | 1.0 |" in table  # one seed: no ± std
    assert "| plasticity | retention | final a | final b | train s |" in table
    assert "Per seed:" in table and "| full/seed_1 | 12.5 | 20.0% |" in table
    rows = list(csv.DictReader(io.StringIO(comparison.comparison_csv(result))))
    assert [row["run"] for row in rows] == [*runs, "full (mean)", "full (std)", "cms (mean)", "cms (std)"]
    assert [row["stat"] for row in rows] == ["run"] * 4 + ["mean", "std"] * 2
    assert rows[0]["seed"] == "0" and rows[0]["group"] == "full" and float(rows[0]["retention"]) == 0.5
    assert float(rows[4]["plasticity"]) == 12.0 and float(rows[5]["plasticity"]) == 2.0
    assert rows[4]["seed"] == "" and rows[7]["plasticity"] == ""


def test_without_seeds_the_table_is_one_row_per_run():
    result = experiment({"full": run("full", 10.0, 1.0, [11.0, 12.0]), "cms": run("cms", 9.0, 2.0, [1.0, 2.0])})
    table = comparison.format_comparison(result)
    assert "±" not in table and "Per seed" not in table and table.count("\n| ") == 3
    assert "Chosen" not in table  # one rate per strategy: nothing to choose
    assert result["groups"][0]["seeds"] == [None]


def test_the_chosen_rate_is_the_least_forgetting_within_two_percent_of_full():
    groups = [
        group("full-lr1", "full", 10.0, 5.0, relative=0.5, rate=1.0),
        group("full-lr2", "full", 10.1, 1.0, relative=0.1, rate=2.0),  # within 2% of 10.0: least forgetting
        group("cms-lr1", "cms", 10.15, 0.9, relative=0.3, rate=1.0),  # within (10.15 <= 10.2)
        group("cms-lr2", "cms", 10.19, 0.8, relative=0.2, rate=2.0),  # within, less relative forgetting: chosen
        group("cms-lr3", "cms", 9.0, 0.1, relative=0.01, rate=3.0),  # better plasticity still counts as within
        group("lora-lr1", "lora", 10.3, 0.1, relative=0.01, rate=1.0),  # none of lora is within
        group("lora-lr2", "lora", 10.25, 0.5, relative=0.05, rate=2.0),
    ]
    chosen = comparison.choose_learning_rates(groups, higher_is_better=False)
    assert chosen["forgetting"] == "relative_forgetting" and chosen["reference"] == "full"
    picks = chosen["strategies"]
    assert picks["full"]["group"] == "full-lr2" and picks["full"]["within"]
    assert picks["cms"]["group"] == "cms-lr3" and picks["cms"]["reference_plasticity"] == 10.0
    groups[4]["mean"]["relative_forgetting"] = 0.9
    assert comparison.choose_learning_rates(groups, False)["strategies"]["cms"]["group"] == "cms-lr2"
    assert picks["lora"] == {
        "group": "lora-lr2",  # the best plasticity, marked
        "learning_rate": 2.0,
        "plasticity": 10.25,
        "forgetting": 0.05,
        "reference_plasticity": 10.0,
        "within": False,
    }
    assert "within 2% (relative)" in chosen["rule"] and "relative forgetting" in chosen["rule"]
    assert "lora: lora-lr2 (learning rate 2.0)" in comparison.format_chosen(chosen)
    assert "(none within)" in comparison.format_chosen(chosen)


def test_cms_level_types_are_methods_of_their_own():
    """A lowrank CMS run that forgets least is not the chosen `cms`: each level type is chosen and drawn apart."""
    default = run("cms", 10.0, 2.0, [11.0, 12.0])
    lowrank = run("cms", 10.0, 1.0, [11.0, 12.0])
    lowrank["settings"]["cms_init"] = "lowrank"
    replayed = run("cms+replay", 10.0, 1.0, [11.0, 12.0])
    replayed["settings"]["cms_init"] = "zero"
    result = experiment(
        {"cms-a": default, "cms-b": lowrank, "full": run("full", 10.0, 3.0, [11.0, 12.0]), "both": replayed}
    )
    assert [row["method"] for row in result["comparison"]] == ["cms", "cms (lowrank)", "full", "cms+replay (zero)"]
    assert result["groups"][1]["method"] == "cms (lowrank)"
    picks = result["chosen"]["strategies"]
    assert picks["cms"]["group"] == "cms-a" and picks["cms (lowrank)"]["group"] == "cms-b"
    assert set(picks) == {"cms", "cms (lowrank)", "full", "cms+replay (zero)"}
    full = run("full", 10.0, 3.0, [11.0, 12.0])
    full["settings"]["cms_init"] = "lowrank"  # not a setting of full fine-tuning
    assert comparison.method_of(full) == "full"


def test_the_chosen_rate_for_accuracy_and_without_a_full_run():
    groups = [
        group("cms-a", "cms", 0.80, 0.3, rate=1e-3),  # no relative forgetting: forgetting decides
        group("cms-b", "cms", 0.79, 0.1, rate=2e-3),  # 0.79 >= 0.98 * 0.80: within
        group("cms-c", "cms", 0.70, 0.0, rate=3e-3),  # not within
    ]
    chosen = comparison.choose_learning_rates(groups, higher_is_better=True)
    assert chosen["reference"] is None and chosen["forgetting"] == "forgetting"
    assert chosen["strategies"]["cms"]["group"] == "cms-b" and chosen["strategies"]["cms"]["within"]
    assert chosen["strategies"]["cms"]["reference_plasticity"] == 0.80
    groups[1]["mean"]["plasticity"] = 0.78  # now 2.5% below: only the best itself is within
    assert comparison.choose_learning_rates(groups, higher_is_better=True)["strategies"]["cms"]["group"] == "cms-a"


def test_the_chosen_rate_is_printed_under_the_comparison_when_a_strategy_has_several():
    runs = {
        "full-lr0.001": run("full", 10.0, 1.0, [11.0, 12.0], rate=1e-3),
        "full-lr0.01": run("full", 10.1, 0.5, [11.0, 12.0], rate=1e-2),
    }
    table = comparison.format_comparison(experiment(runs))
    assert table.endswith(
        "- full: full-lr0.01 (learning rate 0.01): plasticity 10.1 (reference 10), relative forgetting 5.0%"
    )
    assert "Chosen learning rate per method" in table


@pytest.mark.parametrize(
    ("higher_is_better", "expected"),
    [
        (False, [0, 3, 1]),  # lower plasticity better: (1, 5), (2, 2), (3, 1)
        (True, [1, 5, 4]),  # higher plasticity better: (3, 1), (3.5, 1.5), (4, 3)
    ],
)
def test_the_pareto_frontier_keeps_the_non_dominated_points(higher_is_better, expected):
    points = [(1.0, 5.0), (3.0, 1.0), (2.5, 3.0), (2.0, 2.0), (4.0, 3.0), (3.5, 1.5)]
    assert pareto.pareto_frontier(points, higher_is_better) == expected
    assert pareto.pareto_frontier([(1.0, 1.0), (1.0, 1.0)], higher_is_better) == [0, 1]  # ties both stay
    assert pareto.pareto_frontier([], higher_is_better) == []


def test_the_pareto_plot(tmp_path):
    pytest.importorskip("matplotlib")
    groups = [
        group("full-lr1", "full", 10.0, 5.0, relative=0.5),
        group("full-lr2", "full", 11.0, 1.0, relative=0.1),
        group("cms", "cms", 12.0, 0.5, relative=0.05),
    ]
    groups[0]["std"].update(plasticity=0.5, relative_forgetting=0.05)
    figure = pareto.pareto_figure(groups, "perplexity", higher_is_better=False)
    axes = figure.axes[0]
    assert axes.get_xlabel() == "plasticity: mean perplexity right after learning each task (lower is better)"
    assert axes.get_ylabel() == "relative forgetting (lower is better)"
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["full", "cms"]
    path = pareto.write_pareto_plot(groups, "perplexity", False, tmp_path / "plots")
    assert path == tmp_path / "plots" / "pareto.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    groups[2]["mean"]["relative_forgetting"] = None
    assert pareto.pareto_figure(groups, "perplexity", False).axes[0].get_ylabel() == "forgetting (lower is better)"
