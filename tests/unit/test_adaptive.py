"""Adaptive eta's search (gammasweep.sweep.adaptive) on columns whose answer is known by construction."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gammasweep.sweep.adaptive import (
    INFERRED_DIVERGED,
    SKIPPED,
    TRAINED,
    AdaptiveSettings,
    eta_guess,
    find_edges,
    statuses,
    train_window,
    window_indices,
)


def short_runs(edges: dict[str, int], calls: list[dict[str, list[int]]]):
    """Columns whose short runs diverge (at step 3) from index ``edges[key]`` up; records each round's trials."""

    def run(trials: dict[str, list[int]]) -> dict[str, dict[int, int]]:
        calls.append(trials)
        return {key: {i: 3 if i >= edges[key] else -1 for i in indices} for key, indices in trials.items()}

    return run


def find_edge(n: int, start: int, window: int, edge: int, calls: list[list[int]]) -> tuple[int, dict[int, int]]:
    """``find_edges`` on one column whose edge is ``edge``; ``calls`` gets each round's trials."""
    rounds: list[dict[str, list[int]]] = []
    found = find_edges({"c": (n, start)}, window, short_runs({"c": edge}, rounds), log=lambda msg: None)
    calls += [trials["c"] for trials in rounds]
    return found["c"]


def full_runs(edge: int, calls: list[list[int]]):
    """A column whose full-length runs diverge from index ``edge`` up."""

    def run(indices: list[int]) -> dict[int, bool]:
        calls.append(indices)
        return {i: i >= edge for i in indices}

    return run


@pytest.mark.parametrize("n", [1, 2, 7, 25, 49])
@pytest.mark.parametrize("window", [1, 2, 4])
def test_find_edge_finds_every_edge_from_every_start(n, window):
    for edge, start in itertools.product(range(n + 1), range(n)):
        calls: list[list[int]] = []
        found, results = find_edge(n, start, window, edge, calls)
        assert found == edge, (n, window, edge, start)
        assert all(results[i] == (3 if i >= edge else -1) for i in results)
        trials = [i for call in calls for i in call]
        assert len(trials) == len(set(trials)), "a grid point was run twice"
        assert all(0 < len(call) <= window for call in calls)
        assert (edge - 1 in results or edge == 0) and (edge in results or edge == n)


def test_a_good_guess_brackets_in_one_round_and_a_bad_one_in_a_few():
    n, edge = 49, 30  # the paper's half-decade grid from 1e-12 to 1e12
    good: list[list[int]] = []
    find_edge(n, edge, 4, edge, good)
    assert len(good) == 1
    bad: list[list[int]] = []
    find_edge(n, 0, 4, edge, bad)  # 15 decades off
    assert len(bad) <= 5 and sum(map(len, bad)) <= 20 < n


def test_columns_search_in_lockstep_each_as_alone():
    """Every column of a lockstep search runs the trials it would run alone, round by round; a round holds
    the columns not yet bracketed, and the search lasts as long as the longest one."""
    n = 49
    columns = {"good": (n, 30), "bad": (n, 0), "top": (n, 45), "short": (7, 3)}
    edges = {"good": 30, "bad": 30, "top": n, "short": 0}
    rounds: list[dict[str, list[int]]] = []
    found = find_edges(columns, 4, short_runs(edges, rounds), log=lambda msg: None)
    lengths = []
    for key, (size, start) in columns.items():
        alone: list[list[int]] = []
        assert found[key] == find_edge(size, start, 4, edges[key], alone)
        assert [trials[key] for trials in rounds[: len(alone)]] == alone  # from the first round on
        assert all(key not in trials for trials in rounds[len(alone) :])  # then out of the search
        lengths.append(len(alone))
    assert len(rounds) == max(lengths) > min(lengths) >= 1


def test_the_window_reaches_depth_steps_below_eta_max():
    assert list(window_indices(49, 30, 6)) == list(range(23, 31))  # eta_max = index 29, 6 steps down
    assert list(window_indices(49, 4, 6)) == list(range(0, 5))  # clipped at the grid's bottom
    assert list(window_indices(49, 49, 6)) == list(range(42, 49))  # nothing diverges: the top 7
    assert list(window_indices(49, 30, None)) == list(range(0, 31))  # all the way down
    assert list(window_indices(49, 0, 6)) == []  # the first point diverges: nothing to train


def test_a_late_divergence_lowers_the_edge_and_the_window_grows_down():
    calls: list[list[int]] = []
    messages: list[str] = []
    edge, trained = train_window(49, 30, 6, full_runs(27, calls), log=messages.append)
    assert edge == 27 and calls[0] == list(range(23, 31)) and calls[1] == [20, 21, 22]
    assert sorted(trained) == list(range(20, 31)) and [i for i in trained if trained[i]] == [27, 28, 29, 30]
    assert "move the edge from index 30 to 27" in messages[0]
    status = statuses(49, edge, trained)
    assert status[:20] == [SKIPPED] * 20 and status[20:31] == [TRAINED] * 11 and status[31:] == [INFERRED_DIVERGED] * 18


def test_a_top_point_that_survives_at_full_length_raises_the_edge():
    calls: list[list[int]] = []
    edge, trained = train_window(49, 30, 6, full_runs(32, calls), log=lambda msg: None)
    assert edge == 32 and calls[1:] == [[31], [32]] and trained[32] and not trained[31]
    edge, trained = train_window(10, 9, 2, full_runs(99, []), log=lambda msg: None)
    assert edge == 10 and sorted(trained) == list(range(6, 10))  # nothing diverges on the grid
    assert statuses(10, edge, trained) == [SKIPPED] * 6 + [TRAINED] * 4


def test_a_column_whose_first_point_diverges_trains_nothing():
    calls: list[list[int]] = []
    edge, trained = train_window(12, 0, 3, full_runs(0, calls), log=lambda msg: None)
    assert (edge, trained, calls) == (0, {}, [])
    assert statuses(12, 0, {}) == [INFERRED_DIVERGED] * 12


def test_depth_in_grid_steps_follows_the_grid_spacing():
    settings = AdaptiveSettings(bracket_steps=10, depth_decades=3.0)
    assert settings.depth_steps(list(10.0 ** np.arange(-12, 12.1, 0.5))) == 6
    assert settings.depth_steps(list(10.0 ** np.arange(-7, 5))) == 3
    assert settings.depth_steps(list(10.0 ** np.arange(-6, 6, 1 / 3))) == 9
    assert AdaptiveSettings(bracket_steps=10, depth_decades=None).depth_steps([1.0, 10.0]) is None


@pytest.mark.parametrize("layers", [2, 3, 4])
@pytest.mark.parametrize(
    ("loss", "optimizer", "lazy_exponent", "rich_numerator"),
    [
        ("mse", "sgd", 2.0, 2.0),
        ("cross_entropy", "sgd", 1.0, 2.0),
        ("mse", "signsgd", 1.0, 1.0),
        ("mse", "adam", 1.0, 1.0),
    ],
)
def test_the_guess_follows_the_edge_of_each_loss_and_optimizer(layers, loss, optimizer, lazy_exponent, rich_numerator):
    """SGD/MSE gamma^2 and gamma^(2/L); cross-entropy's lazy edge gamma (it was seeded with gamma^2, 10^4
    too low at gamma = 1e-4); SignSGD and Adam gamma and gamma^(1/L)."""

    def exponent(g: float) -> float:
        return np.log10(
            eta_guess(2 * g, layers, loss, optimizer=optimizer) / eta_guess(g, layers, loss, optimizer=optimizer)
        ) / np.log10(2)

    assert exponent(1e-4) == pytest.approx(lazy_exponent, abs=1e-3)
    assert exponent(1e4) == pytest.approx(rich_numerator / layers, abs=1e-3)
    assert eta_guess(1.0, layers, loss, scale=10.0, optimizer=optimizer) == pytest.approx(
        10 * eta_guess(1.0, layers, loss, optimizer=optimizer)
    )
