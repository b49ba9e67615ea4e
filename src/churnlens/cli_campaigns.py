"""The campaign commands of the ``churnlens`` CLI: ``outcomes`` and ``train-uplift``.

Registered on the app by :mod:`churnlens.cli`; like every command they parse options,
call one library function and render (start-up stays light: the library is imported in
the command's body).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churnlens import rendering
from churnlens.cli_options import ConfigOpt, ModelsDirOpt, TrackOpt, opt, settings_from

HORIZON = "Days after the scoring day (default: the scoring model's horizon)."


def outcomes(
    scores: Annotated[Path, typer.Argument(help="Scores file written by `churnlens score`.")],
    events: Annotated[Path, opt("The event log, reaching the end of the horizon.")],
    out: Annotated[Path, opt("Outcomes table: .csv or .json.", "--out", "-o")],
    horizon_days: Annotated[int | None, opt(HORIZON, min=1, max=36_500)] = None,
    report: Annotated[Path | None, opt("Also write the HTML report here.")] = None,
    config: ConfigOpt = None,
    track: Annotated[bool, opt("Record the run in MLflow.")] = True,
) -> None:
    """Measure each action against its control group once the horizon has passed."""
    from churnlens.campaigns import outcomes_job

    with rendering.status("Measuring the campaign..."):
        result = outcomes_job(
            scores, events, out, settings_from(config), horizon_days=horizon_days,
            report=report, track=track,
        )  # fmt: skip
    rendering.show_outcomes(result)


def train_uplift(
    scores: Annotated[list[Path], typer.Argument(help="Past scores files with control groups.")],
    events: Annotated[Path, opt("The event log, reaching the end of every horizon.")],
    horizon_days: Annotated[int | None, opt(HORIZON, min=1, max=36_500)] = None,
    config: ConfigOpt = None,
    models_dir: ModelsDirOpt = Path("models"),
    track: TrackOpt = True,
) -> None:
    """Learn per action whom it changes (uplift) from past campaigns' control groups."""
    from churnlens.uplifting import track_uplift, train_uplift, write_uplift_bundle

    settings = settings_from(config)
    with rendering.status("Learning uplift from past campaigns..."):
        result = train_uplift(list(scores), events, settings, horizon_days)
        write_uplift_bundle(result, models_dir, settings)
        if track:
            track_uplift(result, settings, config)
    rendering.show_uplift(result)
