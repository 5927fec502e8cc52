"""report.png: loss curves, state memory, cumulative energy and the settings the adaptive run chose.

Three things keep the figure readable whatever the runs did:

* **Change labels never overlap.** Each setting change gets a thin vertical line and a label along the top of
  the settings panel; :func:`place_labels` measures every label as drawn and puts it in the highest row where
  it clears the previous label in that row, so changes that come close together stack instead of colliding.
* **Every knob of the setting is drawn:** rank (log axis, "none" above 64 for no projection), bits and
  gamma (the variance-reduction shift, its own axis), each as stairs over the interval it was in force.
* **Final-loss markers stay visible** when runs end at the same loss: each run's hollow marker has its own
  shape and size and sits at its own small horizontal offset past the last step.

Per-interval quantities are drawn as stairs over the interval they describe (a point's ``step`` is the end
of its interval).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from demo.runs import Point, RunResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Annotation

__all__ = ["build_report", "changes", "final_marker_xs", "place_labels", "plot_report"]

COLORS = {"adaptive": "tab:blue", "adamw": "tab:gray", "static": "tab:orange"}
#: Colours of the second and later static runs (``--static-setting`` with several settings).
MORE_STATIC_COLORS = ("tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink")
#: hollow final-loss markers, one shape and size per run (largest first)
FINAL_MARKERS = [("*", 220), ("D", 110), ("o", 45), ("s", 20)]
#: spacing of the final-loss markers past the last step, as a fraction of the x range
FINAL_DODGE = 0.025


def _edges(steps: Sequence[int]) -> list[int]:
    """Stair edges: each point's interval starts one interval before its step."""
    first = steps[0] - (steps[1] - steps[0] if len(steps) > 1 else steps[0])
    return [first, *steps]


def changes(points: Sequence[Point]) -> list[tuple[int, str]]:
    """``(start step, label)`` of every setting change of a run, the first setting included."""
    if not points:
        return []
    out: list[tuple[int, str]] = []
    prev = None
    for p, x0 in zip(points, _edges([p.step for p in points])[:-1], strict=True):
        if p.setting != prev:
            out.append((x0, p.setting))
            prev = p.setting
    return out


def final_marker_xs(last_step: int, x_range: float, n_runs: int) -> list[float]:
    """Where each run's final-loss marker goes: past ``last_step``, one ``FINAL_DODGE`` of the x range
    apart, so equal final losses do not hide each other."""
    gap = FINAL_DODGE * max(x_range, 1.0)
    return [last_step + gap * (i + 1) for i in range(n_runs)]


def place_labels(
    ax: Axes, items: Sequence[tuple[float, str]], top: float = 0.98, pad_px: float = 4.0, fontsize: float = 8
) -> list[Annotation]:
    """Label each ``(x, text)`` along the top of ``ax``, in rows, so no two labels overlap.

    Labels are measured as rendered; each goes to the highest row where it starts ``pad_px`` pixels after
    the previous label of that row ends (a new row below when none has room). Returns the annotations.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    ax_px = ax.get_window_extent(renderer).height
    row_ends: list[float] = []  # display x where each row's last label ends
    out = []
    for x, text in items:
        ann = ax.annotate(
            text,
            (x, top),
            xycoords=ax.get_xaxis_transform(),
            xytext=(2, 0),
            textcoords="offset points",
            va="top",
            fontsize=fontsize,
        )
        bb = ann.get_window_extent(renderer)
        row = next((i for i, end in enumerate(row_ends) if bb.x0 >= end + pad_px), len(row_ends))
        if row == len(row_ends):
            row_ends.append(bb.x1)
        else:
            row_ends[row] = bb.x1
        ann.xy = (x, top - row * (bb.height + pad_px) / max(ax_px, 1.0))
        out.append(ann)
    return out


def _settings_panel(ax_set: Axes, pts: Sequence[Point]) -> None:
    steps = [p.step for p in pts]
    edges = _edges(steps)
    ranks = [p.rank if p.rank else 128 for p in pts]  # rank 0 (no projection) drawn above 64
    ax_set.stairs(ranks, edges, color="tab:blue", lw=2, baseline=None, label="rank")
    ax_set.set_yscale("log", base=2)
    ticks = [1, 2, 4, 8, 16, 32, 64, 128]
    ax_set.set_yticks(ticks, [*map(str, ticks[:-1]), "none"])
    ax_set.set_ylim(0.7, 600)  # headroom for the change labels
    ax_set.set_ylabel("rank")
    ax2 = ax_set.twinx()
    ax2.stairs(
        [p.bits or 32 for p in pts], edges, color="tab:red", lw=2, ls="--", baseline=None, label="bits"
    )
    ax2.set_ylabel("bits")
    ax2.set_ylim(0, 48)  # 32 bits stays below the change labels
    ax3 = ax_set.twinx()  # gamma on its own axis, right of bits
    ax3.spines["right"].set_position(("axes", 1.12))
    gammas = [p.gamma or 0.0 for p in pts]
    ax3.stairs(gammas, edges, color="tab:green", lw=1.5, ls=":", baseline=None, label="gamma")
    ax3.set_ylabel("gamma")
    ax3.set_ylim(-0.05, 1.4)
    for x0, _ in changes(pts):
        ax_set.axvline(x0, color="0.75", lw=0.8, zorder=0)
    handles: list[Any] = []
    labels: list[str] = []
    for ax in (ax_set, ax2, ax3):
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    ax_set.legend(handles, labels, fontsize=8, loc="lower right")


def build_report(runs: Sequence[RunResult], title: str, energy_note: str) -> Figure:
    """The report's figure (2 x 2 panels); :func:`plot_report` saves it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    ax_loss, ax_mem, ax_energy, ax_set = axes.ravel()
    with_points = [r for r in runs if r.points]
    last = max((r.points[-1].step for r in with_points), default=0)
    first = min((_edges([p.step for p in r.points])[0] for r in with_points), default=0)
    marker_xs = final_marker_xs(last, last - first, len(runs))
    n_static = 0
    for i, r in enumerate(runs):
        if not r.points:
            continue
        kind = r.name.split()[0]
        c = COLORS.get(kind)
        if kind == "static":
            if n_static:
                c = MORE_STATIC_COLORS[(n_static - 1) % len(MORE_STATIC_COLORS)]
            n_static += 1
        steps = [p.step for p in r.points]
        edges = _edges(steps)
        ax_loss.plot(steps, [p.loss for p in r.points], color=c, label=r.name)
        shape, size = FINAL_MARKERS[i % len(FINAL_MARKERS)]
        ax_loss.scatter(
            [marker_xs[i]],
            [r.final_val_loss],
            facecolors="none",
            edgecolors=c,
            marker=shape,
            s=size,
            lw=1.5,
            zorder=3,
            label=f"{r.name}: final val {r.final_val_loss:.3f}",
        )
        ax_mem.stairs(
            [p.state_bytes / r.n_params for p in r.points], edges, color=c, lw=2, baseline=None, label=r.name
        )
        cum, acc = [], 0.0
        for p in r.points:
            acc += p.energy_j
            cum.append(acc)
        ax_energy.plot(steps, cum, color=c, label=f"{r.name}: {acc:,.0f} J")
    ax_loss.set(
        title="training loss per interval (hollow markers: final validation loss)",
        xlabel="step",
        ylabel="nats/byte",
    )
    ax_mem.set(title="optimizer + compression state", xlabel="step", ylabel="bytes per parameter")
    ax_mem.set_ylim(bottom=0)
    ax_energy.set(title=f"cumulative energy ({energy_note.split(':')[0]})", xlabel="step", ylabel="J")
    for ax in (ax_loss, ax_mem, ax_energy):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_energy.text(0.99, 0.02, energy_note, transform=ax_energy.transAxes, ha="right", fontsize=7)
    adaptive = next((r for r in runs if r.name.startswith("adaptive")), None)
    ax_set.set(title="setting in force in the adaptive run (labels: each change)", xlabel="step")
    fig.suptitle(title, fontsize=10)
    if adaptive is not None and adaptive.points:
        _settings_panel(ax_set, adaptive.points)
        fig.canvas.draw()  # final layout first: the labels are measured where they will be drawn
        fig.set_layout_engine("none")  # ... and stay there (no re-layout when saving)
        place_labels(ax_set, changes(adaptive.points))
    return fig


def plot_report(runs: Sequence[RunResult], path: Path, title: str, energy_note: str) -> None:
    """Write report.png (see the module docstring for what it shows)."""
    import matplotlib.pyplot as plt

    fig = build_report(runs, title, energy_note)
    fig.savefig(path, dpi=110)
    plt.close(fig)
