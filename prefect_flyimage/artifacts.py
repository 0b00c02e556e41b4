"""Prefect artifacts for image builds: one markdown table per run.

The rendering (:func:`build_result_markdown`) is plain text and needs no Prefect
server; :func:`create_build_artifact` publishes it with
:func:`prefect.artifacts.create_markdown_artifact` (or, outside a run context, linked
to an explicit task run) under a stable key derived from the repository, so the
Artifacts page shows the history of one image as versions of one artifact.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Iterable, Mapping, Optional, Sequence, Union
from uuid import UUID

from .errors import InvalidReferenceError
from .names import ImageRef
from .plan import BuildResult

__all__ = [
    "artifact_key",
    "build_result_markdown",
    "create_build_artifact",
    "markdown_cell",
    "markdown_table",
    "result_status",
]

#: Prefix of every artifact key we create.
KEY_PREFIX = "flyimage"
#: Longest key we produce (Prefect has no limit, but the UI and URLs prefer short ones).
KEY_MAX = 80

ResultLike = Union[BuildResult, Mapping[str, Any]]

_TIMING_ORDER = ("hash", "check", "check_local", "pull", "build", "verify", "push", "total")


def artifact_key(repository: str) -> str:
    """A Prefect artifact key for ``repository`` (lowercase letters, digits and dashes).

    ``127.0.0.1:5000/team/app_1:tag`` -> ``flyimage-127-0-0-1-5000-team-app-1``. A tag or
    digest is dropped first so every build of one repository shares the key; text that
    is no image reference is slugged as it is. Long names are shortened with a hash
    suffix so two long repositories never share a key.
    """
    try:
        name = ImageRef.parse(repository).name
    except InvalidReferenceError:
        name = repository
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "image"
    key = f"{KEY_PREFIX}-{slug}"
    if len(key) > KEY_MAX:
        suffix = hashlib.sha256(name.encode()).hexdigest()[:10]
        key = f"{key[: KEY_MAX - len(suffix) - 1].rstrip('-')}-{suffix}"
    return key


def _get(result: ResultLike, name: str, default: Any = None) -> Any:
    if isinstance(result, Mapping):
        return result.get(name, default)
    return getattr(result, name, default)


def result_status(result: ResultLike, *, cache_hit: bool = False) -> str:
    """``built + pushed``, ``built``, ``pushed`` or ``cached`` (``cached (prefect)`` on a cache hit)."""
    if cache_hit:
        return "cached (prefect cache)"
    done = [word for word, flag in (("built", _get(result, "built")), ("pushed", _get(result, "pushed"))) if flag]
    return " + ".join(done) or "cached"


def _size(value: Optional[int]) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover - loop always returns


def _durations(timings: Optional[Mapping[str, float]]) -> str:
    if not timings:
        return "—"
    order = {name: i for i, name in enumerate(_TIMING_ORDER)}
    items = sorted(timings.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    return ", ".join(f"{name} {float(seconds):.2f}s" for name, seconds in items)


def markdown_cell(text: Any) -> str:
    """``text`` made safe for one markdown table cell (shared by every table we render)."""
    # A '|' would end the cell and a newline the row.
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a markdown table. Cells are markdown already: escape plain text in them
    with :func:`markdown_cell`."""
    lines = ["| " + " | ".join(markdown_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


_cell = markdown_cell


def _bases(result: ResultLike) -> list[tuple[str, str]]:
    bases = _get(result, "bases") or ()
    return list(bases.items()) if isinstance(bases, Mapping) else [tuple(b) for b in bases]


def _link(text: str, url: Optional[str]) -> str:
    label = markdown_cell(text).replace("[", "\\[").replace("]", "\\]")
    return f"[{label}]({url})" if url and re.match(r"^https?://[^\s()]+$", url) else label


def _details(result: ResultLike) -> list[str]:
    """The build details of one result (its lineage): plan hash, inputs, platforms, digest,
    mirrors, provenance and the flow run that built it. Nothing when the result has none."""
    details = _get(result, "details") or {}
    mirrors = list(_get(result, "mirrors") or ())
    if not details and not mirrors:
        return []
    digest = _get(result, "digest")
    lines = ["", f"#### Build of `{markdown_cell(_get(result, 'reference'))}`", ""]
    lines.append(f"- **Plan hash**: `{markdown_cell(_get(result, 'plan_hash'))}`")
    if details.get("inputs"):
        lines.append(f"- **Inputs**: {markdown_cell(details['inputs'])}")
    if "platforms" in details:
        platforms = details["platforms"]
        lines.append(f"- **Platforms**: {markdown_cell(', '.join(platforms)) if platforms else 'the daemon’s own'}")
    lines.append(f"- **Digest**: `{markdown_cell(digest)}`" if digest else "- **Digest**: — (not in a registry)")
    if mirrors:
        lines.append("- **Mirrors**: " + ", ".join(f"`{markdown_cell(m)}`" for m in mirrors))
    if "provenance" in details:
        found = details["provenance"]
        if found is None:
            text = "unknown (the registry could not be asked)"
        elif not found:
            text = "none in the registry (single-platform builds carry none unless PREFECT_FLYIMAGE_PROVENANCE asks)"
        else:
            text = "BuildKit attestation " + ", ".join(
                f"`{markdown_cell(a.get('digest'))}` ({markdown_cell(a.get('platform'))})" for a in found
            )
        lines.append(f"- **Provenance**: {text}")
    run = details.get("built_by")
    if run:
        name = run.get("name") or run.get("id")
        lines.append(f"- **Built by flow run**: {_link(str(name), run.get('url'))} (`{markdown_cell(run.get('id'))}`)")
    return lines


def build_result_markdown(
    results: Iterable[ResultLike],
    *,
    title: Optional[str] = "Container images",
    cache_hits: Iterable[bool] = (),
) -> str:
    """A markdown table of build results: reference, digest, size, status and durations,
    then each result's build details (plan hash, inputs, platforms, digest, mirrors,
    provenance, the flow run that built it) when the tasks recorded them.

    ``results`` are :class:`~prefect_flyimage.plan.BuildResult` objects or their
    :meth:`~prefect_flyimage.plan.BuildResult.as_dict` form. ``cache_hits`` flags, per
    result, that it came from Prefect's task cache (nothing ran but the existence
    probe). Only public facts are rendered: no credentials ever reach a result.
    """
    results, hits = list(results), list(cache_hits)
    lines = []
    if title:
        lines += [f"### {_cell(title)}", ""]
    lines += [
        "| Reference | Digest | Size | Status | Durations |",
        "|---|---|---|---|---|",
    ]
    for i, result in enumerate(results):
        digest = _get(result, "digest")
        lines.append(
            "| "
            + " | ".join(
                _cell(v)
                for v in (
                    f"`{_get(result, 'reference')}`",
                    f"`{digest}`" if digest else "—",
                    _size(_get(result, "size")),
                    result_status(result, cache_hit=hits[i] if i < len(hits) else False),
                    _durations(_get(result, "timings")),
                )
            )
            + " |"
        )
    for result in results:  # lineage first, then what changed (the longest part) last
        lines += _details(result)
    for result in results:
        why = _get(result, "why")
        if why:
            lines += ["", why.rstrip("\n")]
    notes = [
        f"Base `{ref}` of `{_get(result, 'reference')}` was built by tag, not resolved to a digest "
        "(PREFECT_FLYIMAGE_OFFLINE_BASES)."
        for result in results
        for ref, digest in _bases(result)
        if digest == "offline"
    ]
    if notes:
        lines += [""] + [_cell(n) for n in notes]
    return "\n".join(lines) + "\n"


def create_build_artifact(
    results: Iterable[ResultLike],
    *,
    key: Optional[str] = None,
    description: Optional[str] = None,
    cache_hits: Iterable[bool] = (),
    task_run_id: Optional[UUID] = None,
    flow_run_id: Optional[UUID] = None,
) -> UUID:
    """Publish :func:`build_result_markdown` of ``results`` as a Prefect markdown artifact.

    ``key`` defaults to :func:`artifact_key` of the first result's repository. Inside a
    flow or task run the artifact is linked to it; ``task_run_id``/``flow_run_id`` link it
    explicitly (e.g. from a state hook). Returns the artifact id.
    """
    results = list(results)
    if key is None:
        reference = str(_get(results[0], "reference")) if results else "image"
        key = artifact_key(reference)
    markdown = build_result_markdown(results, cache_hits=cache_hits)
    if task_run_id is None and flow_run_id is None:
        from prefect.artifacts import create_markdown_artifact

        return create_markdown_artifact(markdown=markdown, key=key, description=description)
    from prefect.artifacts import MarkdownArtifact

    artifact = MarkdownArtifact(
        key=key, description=description, markdown=markdown, task_run_id=task_run_id, flow_run_id=flow_run_id
    )
    return artifact.create(_sync=True).id  # type: ignore[call-arg,union-attr]
