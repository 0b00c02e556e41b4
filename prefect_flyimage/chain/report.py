"""Run summaries: one row per image, and a Prefect markdown artifact inside flow runs."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Iterable, Optional

from .fsm import ImageFSM

log = logging.getLogger("prefect_flyimage.chain")

#: Artifact key (lower-case letters, digits and dashes, as Prefect requires).
ARTIFACT_KEY = "image-tree"


@dataclass(frozen=True)
class ImageOutcome:
    """Where one image ended up after a run."""

    image: str  #: label, name:tag
    version: str
    state: str
    digest: Optional[str]
    duration: float
    error: Optional[str] = None
    blocked_by: Optional[str] = None

    @classmethod
    def of(cls, fsm: ImageFSM) -> "ImageOutcome":
        """The outcome of ``fsm`` as it is now."""
        return cls(fsm.label, fsm.tag, fsm.state, fsm.digest, fsm.duration, fsm.error, fsm.blocked_by)

    def as_dict(self) -> dict[str, object]:
        """Plain data (JSON-able)."""
        return asdict(self)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(outcomes: Iterable[ImageOutcome]) -> str:
    """A markdown table: image, version, state, digest, duration (and why, for failures)."""
    rows = ["| image | version | state | digest | duration (s) |", "| --- | --- | --- | --- | --- |"]
    notes = []
    for o in sorted(outcomes, key=lambda o: o.image):
        state = o.state if not o.blocked_by else f"{o.state} (not built: parent {o.blocked_by} failed)"
        rows.append(f"| {_cell(o.image)} | {_cell(o.version)} | {_cell(state)} | {_cell(o.digest or '-')} | {o.duration:.1f} |")
        if o.error:
            notes.append(f"- **{_cell(o.image)}**: {_cell(o.error[:500])}")
    return "\n".join(rows + ([""] + notes if notes else []))


def in_flow_run() -> bool:
    """True inside a Prefect flow run (artifacts need one)."""
    try:
        from prefect.context import FlowRunContext
    except ImportError:  # pragma: no cover - Prefect is a dependency, but the core works without it
        return False
    return FlowRunContext.get() is not None


def report_run(images: Iterable[ImageFSM], action: str) -> Optional[str]:
    """Create the run's markdown artifact when inside a flow run; return the markdown."""
    outcomes = [ImageOutcome.of(i) for i in images]
    text = f"## Image tree {action}\n\n" + markdown_table(outcomes)
    if not in_flow_run():
        return text
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=text, key=ARTIFACT_KEY, description=f"image tree {action}")
    except Exception as exc:  # noqa: BLE001 - a report must never fail the build
        log.warning("could not create the image tree artifact: %s", exc)
    return text


__all__ = ["ARTIFACT_KEY", "ImageOutcome", "in_flow_run", "markdown_table", "report_run"]
