"""``mango bench first``: the first decision on each sample profile, with and without its training step.

A profile the hook takes by itself (``profile="auto"``) has no measured training step until the job's first
interval, so the first decision (:func:`client.controllers.first_setting_for_profile`, made before any step)
cannot read the optimizer's share of a step from it. The environment's episodes always open with a share.
This table puts, for every profile of ``envs/profiles/`` with a measured training step and every objective
preset, the first setting with the measured share beside the one with the share taken away: read as
:data:`~client.controllers.ASSUMED_OPTIMIZER_SHARE` (today's rule) and as 1 (optimizer-step ratios read as
training-step ratios, the rule before session 18). The last line counts the cells where each rule agrees
with the measured share.

Example::

    mango bench first
"""

from __future__ import annotations

from dataclasses import dataclass

import tyro

from client.controllers import ASSUMED_OPTIMIZER_SHARE, first_setting_for_profile
from envs.hardware import load_profiles
from envs.objectives import OBJECTIVE_PRESETS, make_objective

__all__ = ["FirstArgs", "main"]


@dataclass
class FirstArgs:
    """The first decision on each sample profile with the measured, the assumed and no optimizer share."""

    profiles: tuple[str, ...] = ()
    """profile names of envs/profiles/ (empty: every one with a measured training step)"""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(FirstArgs, args=argv, prog="mango bench first", description=FirstArgs.__doc__)
    every = load_profiles()
    names = list(args.profiles) or [n for n, p in sorted(every.items()) if p.optimizer_share is not None]
    unknown = [n for n in names if n not in every]
    if unknown:
        raise SystemExit(f"mango bench first: unknown profile(s) {unknown}; known: {sorted(every)}")
    print(f"assumed share {ASSUMED_OPTIMIZER_SHARE:g}")
    print("| profile | measured share | preset | measured share | assumed share | share 1 |")
    print("|---|---|---|---|---|---|")
    agree = {"assumed": 0, "one": 0}
    cells = 0
    for name in names:
        prof = every[name]
        share = prof.optimizer_share
        if share is None:
            raise SystemExit(f"mango bench first: profile {name!r} has no measured training step")
        bare = prof.model_copy(update={"train_step_s": None})
        bound = prof.model_copy(update={"train_step_s": prof.adamw_step_s})
        dense = 8 * prof.n_params
        for preset, weights in OBJECTIVE_PRESETS.items():
            objective = make_objective(weights)
            measured = first_setting_for_profile(objective, prof, dense)[0].label()
            assumed = first_setting_for_profile(objective, bare, dense)[0].label()
            one = first_setting_for_profile(objective, bound, dense)[0].label()
            cells += 1
            agree["assumed"] += assumed == measured
            agree["one"] += one == measured
            print(f"| {name} | {share:.3f} | {preset} | {measured} | {assumed} | {one} |")
    print(
        f"\nagreement with the measured share: assumed share {agree['assumed']} of {cells} cells, "
        f"share 1 {agree['one']} of {cells}"
    )
    return 0
