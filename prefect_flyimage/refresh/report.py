"""What a refresh run did per image, and the markdown summary (the run's artifact)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from ..artifacts import markdown_cell as cell
from ..artifacts import markdown_table
from ..errors import redact

__all__ = ["STATUSES", "ImageReport", "short_digest", "summary_markdown"]

STATUSES = ("fresh", "rebuilt", "stale", "failed", "blocked")


@dataclass(frozen=True)
class ImageReport:
    """The outcome of one image in a refresh run (plain data: no secrets, JSON-able)."""

    name: str
    kind: str
    status: str  #: one of :data:`STATUSES` (``stale``: found stale, not rebuilt — a dry run)
    reference: Optional[str] = None
    reasons: tuple[str, ...] = ()
    bases_before: Mapping[str, str] = field(default_factory=dict)
    bases_after: Mapping[str, str] = field(default_factory=dict)
    digest_before: Optional[str] = None
    digest_after: Optional[str] = None
    deployments: tuple[str, ...] = ()  #: deployments whose image was updated
    error: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able)."""
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        data["deployments"] = list(self.deployments)
        data["bases_before"] = dict(self.bases_before)
        data["bases_after"] = dict(self.bases_after)
        return data


def short_digest(digest: Optional[str]) -> str:
    """``sha256:0123456789ab`` (``—`` for none): digests as tables show them."""
    if not digest:
        return "—"
    prefix, _, hexpart = digest.partition(":")
    return f"{prefix}:{hexpart[:12]}" if hexpart else digest[:19]


def _bases_cell(report: ImageReport) -> str:
    parts = []
    for ref in sorted(set(report.bases_before) | set(report.bases_after)):
        before, after = report.bases_before.get(ref), report.bases_after.get(ref)
        change = short_digest(after) if before in (None, after) else f"{short_digest(before)} → {short_digest(after)}"
        parts.append(f"`{ref}` {change}")
    return "<br>".join(cell(p) for p in parts) or "—"


def _digest_cell(report: ImageReport) -> str:
    if report.digest_after and report.digest_before and report.digest_after != report.digest_before:
        return f"{short_digest(report.digest_before)} → {short_digest(report.digest_after)}"
    return short_digest(report.digest_after or report.digest_before)


def _why_cell(r: ImageReport) -> str:
    why = "<br>".join(cell(x) for x in r.reasons) or ("up to date" if r.status == "fresh" else "—")
    if r.error:
        why += ("<br>" if why != "—" else "") + "**error:** " + cell(r.error[:600])
    if r.deployments:
        why += "<br>deployments updated: " + ", ".join(f"`{cell(d)}`" for d in r.deployments)
    return why


def summary_markdown(
    reports: Sequence[ImageReport],
    *,
    config_path: Optional[str] = None,
    dry_run: bool = False,
    secrets: Iterable[Optional[str]] = (),
) -> str:
    """The run summary: counts, one row per image (what, why, base and image digests before
    and after), then full digests of every rebuilt image. ``secrets`` are redacted."""
    count = {s: sum(1 for r in reports if r.status == s) for s in STATUSES}
    stale = count["rebuilt"] + count["stale"] + count["failed"]
    lines = [
        f"## Image refresh{' (dry run)' if dry_run else ''}: {stale} of {len(reports)} image(s) stale", "",
        f"{count['rebuilt']} rebuilt, {count['fresh']} fresh, {count['failed']} failed, {count['blocked']} blocked"
        + (f", {count['stale']} not rebuilt (dry run)" if count["stale"] else "")
        + (f" — configuration `{config_path}`" if config_path else ""),
        "",
    ]
    lines += markdown_table(
        ("Image", "Result", "Why", "Base digests (before → after)", "Image digest (before → after)"),
        (
            (f"**{cell(r.name)}**" + (f"<br>`{cell(r.reference)}`" if r.reference else ""), r.status,
             _why_cell(r), _bases_cell(r), _digest_cell(r))
            for r in reports
        ),
    )
    rebuilt = [r for r in reports if r.status == "rebuilt"]
    if rebuilt:
        lines += ["", "### Rebuilt", ""]
        for r in rebuilt:
            lines.append(f"- **{cell(r.name)}** `{cell(r.reference)}`: {r.digest_before or 'none'} → {r.digest_after}")
            for ref in sorted(r.bases_after):
                before = r.bases_before.get(ref)
                if before and before != r.bases_after[ref]:
                    lines.append(f"  - base `{cell(ref)}`: {before} → {r.bases_after[ref]}")
    return redact("\n".join(lines) + "\n", secrets)
