"""What a task's build artifact shows beyond the result: the inputs the plan hash covers,
the platforms, BuildKit provenance, the flow run that built it, and why it was (re)built.

Everything here is a report: a detail that cannot be had is logged (debug) and left out,
never a reason to fail a task.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

from prefect.logging import get_logger

from .credentials import RegistryCredentials
from .errors import FlyImageError
from .names import ImageRef
from .plan import BuildPlan, BuildResult

__all__ = ["explainer", "flow_run", "inputs_summary", "provenance", "why_now", "with_details"]

# The tasks' logger: these lines belong to the task that asked for them.
logger = get_logger("prefect_flyimage.tasks")


def inputs_summary(plan: BuildPlan) -> str:
    """One line on what the plan hash covers (names only: no build-arg values, no secrets)."""
    info = plan.describe()
    size, unit = float(info["bytes"]), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            break
        size /= 1024
    parts = [f"{info['files']} context file(s) ({size:.0f} {unit})" if unit == "B" else f"{info['files']} context file(s) ({size:.1f} {unit})",
             f"Dockerfile sha256:{info['dockerfile_sha256'][:12]}"]
    if info["build_args"]:
        parts.append("build args " + ", ".join(sorted(info["build_args"])))
    if info["target"]:
        parts.append(f"target {info['target']}")
    if info["secrets"]:
        parts.append("secrets " + ", ".join(info["secrets"]) + " (not hashed, never stored)")
    for ref, digest in (info.get("bases") or {}).items():
        parts.append(f"base {ref}@{digest[:19]}" if digest.startswith("sha256:") else f"base {ref} ({digest})")
    return "; ".join(parts)


def flow_run() -> Optional[dict[str, str]]:
    """The current flow run: ``id``, ``name`` and ``url`` (its page in the Prefect UI, when
    ``PREFECT_UI_URL`` is set or derived from the API URL); ``None`` outside a flow run."""
    try:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        run = ctx.flow_run if ctx is not None else None
        run_id, name = (str(run.id), run.name) if run is not None else (None, None)
        if run_id is None:
            from prefect.runtime import flow_run as runtime_run

            run_id, name = runtime_run.id, runtime_run.name
    except Exception as exc:  # noqa: BLE001 - a report, never a reason to fail
        logger.debug("no flow run for the build artifact: %s", exc)
        return None
    if not run_id:
        return None
    found = {"id": str(run_id), "name": str(name or "")}
    try:
        from prefect.utilities.urls import url_for

        url = url_for("flow-run", obj_id=run_id)
    except Exception:  # noqa: BLE001 - an older Prefect: the setting itself
        from prefect.settings import PREFECT_UI_URL

        base = PREFECT_UI_URL.value()
        url = f"{str(base).rstrip('/')}/runs/flow-run/{run_id}" if base else None
    if url:
        found["url"] = url
    return found


def provenance(result: BuildResult, creds: Optional[RegistryCredentials]) -> Optional[list[dict[str, str]]]:
    """The attestation manifests (BuildKit provenance) the registry's index of ``result``
    carries, one per platform: ``[{"platform", "digest"}]``; ``[]`` for a plain image
    manifest or an index without any; ``None`` when the registry cannot say."""
    if not result.digest:
        return None
    from .registry import shared_client

    try:
        found = shared_client(ImageRef.parse(result.repository).registry, creds).get_manifest(result.pinned)
        if found is None:
            return None
        import json

        manifests = json.loads(found[0]).get("manifests") or []
    except (FlyImageError, ValueError) as exc:
        logger.debug("no provenance check for %s: %s", result.reference, exc)
        return None
    platforms = {
        m.get("digest"): "/".join(filter(None, [m["platform"].get("os"), m["platform"].get("architecture"), m["platform"].get("variant")]))
        for m in manifests if isinstance(m.get("platform"), dict)
    }
    return [
        {"platform": platforms.get(a["vnd.docker.reference.digest"], "?"), "digest": m["digest"]}
        for m in manifests
        for a in [m.get("annotations") or {}]
        if a.get("vnd.docker.reference.type") == "attestation-manifest"
    ]


def with_details(result: BuildResult, plan: Optional[BuildPlan], creds: Optional[RegistryCredentials]) -> BuildResult:
    """``result`` with what its artifact shows: inputs, platforms, provenance, the flow run."""
    details = dict(result.details)
    if plan is not None:
        try:
            details["inputs"] = inputs_summary(plan)
        except Exception as exc:  # noqa: BLE001 - a report, never a reason to fail
            logger.debug("no inputs summary for %s: %s", plan.repository, exc)
        details["platforms"] = plan.platform.split(",") if plan.platform else []
    if result.digest and (result.built or result.pushed or "provenance" not in details):
        details["provenance"] = provenance(result, creds)
    if result.built or (result.pushed and "built_by" not in details):
        run = flow_run()
        if run is not None:
            details["built_by"] = run
    return replace(result, details=details)


def explainer(plan: BuildPlan, creds: Optional[RegistryCredentials]) -> tuple[dict[str, str], Any]:
    """A ``verify`` hook for :func:`pipeline.ensure` that records why ``plan`` is (re)built.

    It runs only when the pipeline is about to build or push (never on the no-op path) and
    before the push, so the registry still holds the previous image to compare with. An
    explanation that cannot be had (registry unreachable, no previous image) is logged,
    never fatal: it is a report, not a check.
    """
    found: dict[str, str] = {}

    def hook(image_id: str) -> None:
        from .inputs import explain, why_markdown

        try:
            found["why"] = why_markdown(explain(plan, creds))
        except Exception as exc:  # noqa: BLE001 - a missing explanation must not fail a build
            logger.debug("no rebuild explanation for %s: %s", plan.repository, exc)

    return found, hook


def why_now(plan: BuildPlan, creds: Optional[RegistryCredentials]) -> Optional[str]:
    """The rebuild explanation, asked before an append (after it, the registry holds the
    new image and there is nothing left to compare with)."""
    found, hook = explainer(plan, creds)
    hook("")
    return found.get("why")
