"""``demo.plot``: change labels never overlap (however close the changes), every knob of the setting is drawn
(gamma included), and runs that end at the same loss keep visible, separate final-loss markers."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
from matplotlib.patches import StepPatch

from demo.plot import build_report, changes, final_marker_xs, plot_report
from demo.runs import Point, RunResult

SETTINGS = ["r0/b32/g0", "r8/b4/g0.5", "r16/b8/g0", "r4/b2/g0.25", "r0/b8/g0", "r32/b3/g0.75", "r64/b4/g0"]


def _point(step: int, label: str) -> Point:
    rank, bits, gamma = (float(x[1:]) for x in label.split("/"))
    return Point(step, 3.0 - step / 1000, 1000, 1.0, 0.1, label, int(rank), int(bits), gamma)


def _runs(labels: list[str], final_losses: tuple[float, float, float] = (2.5, 2.5, 2.5)) -> list[RunResult]:
    pts = [_point(10 * (i + 1), lab) for i, lab in enumerate(labels)]
    flat = [_point(p.step, "r0/b8/g0") for p in pts]
    names = ["adaptive (service)", "adamw (torch)", "static r0/b8/g0"]
    return [
        RunResult(n, n, loss, 1000, 100, 10.0, "modelled", 1.0, points=list(p))
        for n, loss, p in zip(names, final_losses, [pts, flat, flat], strict=True)
    ]


def _change_labels(fig: plt.Figure) -> list:
    ax_set = fig.axes[3]
    return [t for t in ax_set.texts if t.get_text() in SETTINGS]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_change_labels_do_not_overlap_when_changes_come_close(seed: int) -> None:
    rng = random.Random(seed)
    # a change at every interval (the closest possible), in a long run and a short one
    labels = [SETTINGS[i % len(SETTINGS)] for i in range(rng.choice([8, 30, 60]))]
    rng.shuffle(labels)
    labels = [lab for i, lab in enumerate(labels) if i == 0 or lab != labels[i - 1]]
    fig = build_report(_runs(labels), "t", "MODELLED: test")
    fig.canvas.draw()
    texts = _change_labels(fig)
    assert len(texts) == len(changes(_runs(labels)[0].points)) == len(labels)
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in texts]
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        assert not a.overlaps(b), (texts[i].get_text(), texts[j].get_text(), a, b)
    plt.close(fig)


def test_rank_bits_and_gamma_are_all_drawn() -> None:
    labels = ["r0/b32/g0", "r8/b4/g0.5", "r16/b8/g0", "r4/b2/g0.25"]
    fig = build_report(_runs(labels), "t", "MODELLED: test")
    drawn = {
        ax.get_ylabel(): [list(p.get_data().values) for p in ax.patches if isinstance(p, StepPatch)]
        for ax in fig.axes[3:]
    }
    assert drawn["rank"] == [[128, 8, 16, 4]]  # rank 0 (no projection) above 64
    assert drawn["bits"] == [[32, 4, 8, 2]]
    assert drawn["gamma"] == [[0.0, 0.5, 0.0, 0.25]]
    legend = [t.get_text() for t in fig.axes[3].get_legend().get_texts()]
    assert legend == ["rank", "bits", "gamma"]
    plt.close(fig)


def test_equal_final_losses_keep_separate_markers(tmp_path: Path) -> None:
    runs = _runs(["r0/b32/g0", "r8/b4/g0.5"], final_losses=(2.5, 2.5, 2.5))
    fig = build_report(runs, "t", "MODELLED: test")
    markers = fig.axes[0].collections
    xs = [float(m.get_offsets()[0][0]) for m in markers]
    ys = [float(m.get_offsets()[0][1]) for m in markers]
    assert ys == [2.5, 2.5, 2.5] and len(set(xs)) == 3 and min(xs) > 20  # past the last step, apart
    assert xs == final_marker_xs(20, 20, 3)
    shapes = {tuple(m.get_paths()[0].vertices.round(3).ravel()) for m in markers}
    assert len(shapes) == 3  # one shape per run
    plt.close(fig)
    plot_report(runs, tmp_path / "report.png", "t", "MODELLED: test")
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
