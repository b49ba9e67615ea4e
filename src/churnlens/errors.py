"""Exception hierarchy: library code raises these, only the CLI prints them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ChurnlensError(Exception):
    """Base class of every error churnlens raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem found in an input: what, where, how many, examples and the fix."""

    column: str
    message: str
    rows: int = 0
    examples: tuple[str, ...] = field(default_factory=tuple)
    fix: str = ""

    def render(self) -> str:
        # "-" or "": a problem of the input as a whole (a missing file), not of a column;
        # a name starting with "-" is a command-line option (--out)
        subject = {"": "", "-": ""}.get(self.column)
        if subject is None:
            subject = (
                f"{self.column}: " if self.column.startswith("-") else f"column '{self.column}': "
            )
        parts = [f"{subject}{self.message}"]
        if self.rows:
            parts.append(f"{self.rows:,} row{'s' if self.rows != 1 else ''}")
        if self.examples:
            parts.append("e.g. " + ", ".join(self.examples))
        text = "; ".join(parts)
        if not self.fix:
            return text
        return f"{text}{'' if text.endswith(('.', '?')) else '.'} Fix: {self.fix}"


class InputError(ChurnlensError):
    """Input data (an event log, a scores file) does not meet its contract.

    Carries every problem found, not just the first.
    """

    def __init__(self, source: str, problems: list[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(column="-", message=problems)]
        self.source = source
        self.problems = list(problems)
        n = len(self.problems)
        lines = [f"{source}: {n} problem{'s' if n != 1 else ''} found"]
        lines += [f"  - {p.render()}" for p in self.problems]
        super().__init__("\n".join(lines))


class ConfigError(ChurnlensError):
    """A configuration or policy file is invalid."""


class ModelError(ChurnlensError):
    """A model bundle or registered model is missing, incompatible or corrupt."""


class OutputError(ChurnlensError):
    """An output could not be written (a full disk, no permission, no such folder); the
    earlier output at that path, if any, is left as it was."""


class SparkError(ChurnlensError):
    """Spark could not start (a bad master, no Java) or one of its jobs failed."""


class TrackingError(ChurnlensError):
    """The MLflow tracking store could not record a run (the model bundle is kept)."""


class DriftError(ChurnlensError):
    """Scoring found drift against the training population at the alert level and was
    asked to fail on it (``--fail-on-drift``): nothing was written. Carries the report."""

    def __init__(self, report: dict[str, Any], top: int = 5) -> None:
        self.report = report
        raised = ", ".join(report.get("raised_by", [])[:top]) or "?"
        worst = [f for f in report.get("features", []) if not f.get("excluded")][:top]
        listed = "; ".join(f"{f['name']} PSI {f['psi']:.3f}" for f in worst)
        score = report.get("score", {})
        super().__init__(
            f"drift against the training population of {report.get('reference_as_of')} "
            f"reached the alert level ({raised}); score PSI {score.get('psi', 0):.3f}, KS "
            f"{score.get('ks', 0):.3f}; worst features: {listed}. No scores were written "
            "and any earlier scores file is unchanged. Check the input, or retrain on it"
        )
