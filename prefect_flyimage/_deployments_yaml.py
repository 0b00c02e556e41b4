"""The images of a ``prefect.yaml``: one build plan per deployment that builds an image.

A deployment builds an image when its ``build`` section (its own, else the file's
top-level one, as ``prefect deploy`` chooses) has our ``build_docker_image`` or
``ensure_image`` step, or prefect-docker's ``build_docker_image`` (ours mirrors its
parameters). Its step's inputs become the plan exactly as the step would make it
(:func:`prefect_flyimage.deployments.steps._prepare`), so ``ensure-all`` and
``prefect deploy`` agree on every content tag. The image is pushed when the step is
``ensure_image`` (with ``push``) or the deployment's ``push`` section has a
``push_docker_image`` step (ours or prefect-docker's).

Placeholders are filled as ``prefect deploy`` fills them: ``{{ $ENV }}`` from the
environment, ``{{ prefect.blocks.* }}`` and ``{{ prefect.variables.* }}`` from the
Prefect API (only when present). Another step's output (``{{ step-id.key }}``) in a
build step cannot be had without running that step: a :class:`ConfigError`.
Credentials are never part of what this returns: :func:`deployment_credentials` reads
them again where the image is pushed (a Dask worker), so no secret becomes a task
parameter.
"""

from __future__ import annotations

__all__ = ["DeploymentImage", "deployment_credentials", "deployment_images"]

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import ConfigError, FlyImageError
from .names import ImageRef
from .plan import BuildPlan
from .yamlconfig import YamlDocument, read_yaml

_OURS = "prefect_flyimage.deployments.steps"
BUILD_STEPS = (f"{_OURS}.build_docker_image", f"{_OURS}.ensure_image", "prefect_docker.deployments.steps.build_docker_image")
PUSH_STEPS = (f"{_OURS}.push_docker_image", "prefect_docker.deployments.steps.push_docker_image")
_RESERVED = ("id", "requires")  # step keywords of prefect's, not the function's


@dataclass(frozen=True)
class DeploymentImage:
    """One deployment's image: its plan and how the step would ensure it (no secrets)."""

    deployment: str  #: the deployment's name
    index: int  #: its position in ``deployments`` (names may repeat across flows)
    step: str  #: the build step's function, e.g. ``prefect_flyimage.deployments.steps.build_docker_image``
    plan: BuildPlan
    push: bool
    force: bool = False  #: the step's ``ignore_cache``
    build_kwargs: dict[str, Any] = field(default_factory=dict)  #: docker build options the plan does not hash


def _steps(section: Any) -> list[tuple[int, str, dict[str, Any]]]:
    """(position, function, inputs) of each well-formed step of a section."""
    found = []
    for i, step in enumerate(section or []):
        if isinstance(step, dict) and len(step) == 1:
            fqn, inputs = next(iter(step.items()))
            found.append((i, str(fqn), dict(inputs or {}) if isinstance(inputs, dict) else {}))
    return found


def _section(doc: YamlDocument, deployment: dict[str, Any], name: str) -> Any:
    # prefect deploy: the deployment's own section when it has the key (even null), else the file's.
    return deployment[name] if name in deployment else (doc.data or {}).get(name)


def _placeholders(value: Any) -> list[Any]:
    from prefect.utilities.templating import find_placeholders

    if isinstance(value, str):
        return list(find_placeholders(value))
    if isinstance(value, dict):
        return [p for v in value.values() for p in _placeholders(v)]
    if isinstance(value, list):
        return [p for v in value for p in _placeholders(v)]
    return []


def _fill(doc: YamlDocument, loc: tuple[Any, ...], inputs: dict[str, Any]) -> dict[str, Any]:
    """``inputs`` with their placeholders filled as ``prefect deploy`` fills them."""
    from prefect.utilities.templating import PlaceholderType, apply_values

    found = _placeholders(inputs)
    foreign = sorted({p.name for p in found if p.type == PlaceholderType.STANDARD})
    if foreign:
        raise ConfigError([
            f"{doc.where(loc)}: refers to another step's output ({', '.join(foreign)}); ensure-all runs only "
            "the image's build step: write the value (or an environment variable) instead"
        ], doc.path)
    if any(p.type in (PlaceholderType.BLOCK_DOCUMENT, PlaceholderType.VARIABLE) for p in found):
        from prefect.utilities.asyncutils import run_coro_as_sync
        from prefect.utilities.templating import resolve_block_document_references, resolve_variables

        inputs = run_coro_as_sync(resolve_block_document_references(inputs))
        inputs = run_coro_as_sync(resolve_variables(inputs))
    return apply_values(inputs, os.environ)


def _deployments(doc: YamlDocument) -> list[dict[str, Any]]:
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("deployments"), list):
        raise ConfigError([f"{doc.where(('deployments',))}: a prefect.yaml with a 'deployments' list is expected"], doc.path)
    problems = [f"{doc.where(('deployments', i))}: a deployment must be a mapping with a 'name'"
                for i, d in enumerate(data["deployments"]) if not isinstance(d, dict) or not d.get("name")]
    if problems:
        raise ConfigError(problems, doc.path)
    return data["deployments"]


def _select(deployments: list[dict[str, Any]], names: Optional[Sequence[str]], doc: YamlDocument) -> list[int]:
    if not names:
        return list(range(len(deployments)))
    known = [str(d["name"]) for d in deployments]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError([f"{doc.path}: no deployment named {', '.join(map(repr, unknown))} (known: {', '.join(known)})"], doc.path)
    return [i for i, n in enumerate(known) if n in names]


def _build_step(doc: YamlDocument, index: int, deployment: dict[str, Any]) -> Optional[tuple[tuple[Any, ...], str, dict[str, Any]]]:
    """(location in the file, function, raw inputs) of the deployment's image build step."""
    section = _section(doc, deployment, "build")
    at: tuple[Any, ...] = ("deployments", index, "build") if "build" in deployment else ("build",)
    for pos, fqn, inputs in _steps(section):
        if fqn in BUILD_STEPS:
            return (*at, pos, fqn), fqn, inputs
    return None


def _image(doc: YamlDocument, index: int, deployment: dict[str, Any]) -> Optional[DeploymentImage]:
    from .deployments import steps

    found = _build_step(doc, index, deployment)
    if found is None:
        return None
    loc, fqn, raw = found
    inputs = _fill(doc, loc, {k: v for k, v in raw.items() if k not in _RESERVED})
    ours = steps.ensure_image if fqn.endswith(".ensure_image") else steps.build_docker_image
    try:
        bound = inspect.signature(ours).bind(**inputs)
    except TypeError as exc:
        raise ConfigError([f"{doc.where(loc)}: {exc}"], doc.path) from None
    bound.apply_defaults()
    args = dict(bound.arguments)
    build_kwargs = dict(args.pop("build_kwargs", None) or {})
    path = Path(str(build_kwargs.get("path") or "."))
    build_kwargs["path"] = str(path if path.is_absolute() else doc.path.parent / path)  # prefect deploy runs in the project root
    try:
        plan, extra, _ = steps._prepare(
            args["image_name"], args["dockerfile"], args["tag"], args["additional_tags"], False,
            args["dockerfile_output_path"], args["build_backend"], build_kwargs,
        )
    except (FlyImageError, ValueError) as exc:
        raise ConfigError([f"{doc.where(loc)}: {exc}"], doc.path) from None
    if fqn.endswith(".ensure_image"):
        push = bool(args.get("push", True))
    else:
        push = any(f in PUSH_STEPS for _, f, _ in _steps(_section(doc, deployment, "push")))
    return DeploymentImage(str(deployment["name"]), index, fqn, plan, push, bool(args.get("ignore_cache")), dict(extra or {}))


def deployment_images(prefect_yaml: str | Path, names: Optional[Sequence[str]] = None) -> list[DeploymentImage]:
    """The image of every deployment of ``prefect_yaml`` that builds one (``names``: only those).

    Raises:
        ConfigError: the file is not a ``prefect.yaml``, a named deployment does not exist,
            or a build step cannot be planned (each problem with its file and line).
    """
    doc = read_yaml(prefect_yaml)
    deployments = _deployments(doc)
    images = [_image(doc, i, deployments[i]) for i in _select(deployments, names, doc)]
    return [image for image in images if image is not None]


def deployment_credentials(prefect_yaml: str | Path, index: int) -> Any:
    """The registry credentials the deployment's push (or ``ensure_image``) step names, filled
    in this process (its environment, the Prefect API); ``None`` when it names none."""
    from .credentials import as_credentials

    doc = read_yaml(prefect_yaml)
    deployment = _deployments(doc)[index]
    found = _build_step(doc, index, deployment)
    candidates = [found[2]] if found is not None and found[1].endswith(".ensure_image") else []
    candidates += [inputs for _, f, inputs in _steps(_section(doc, deployment, "push")) if f in PUSH_STEPS]
    for inputs in candidates:
        if inputs.get("credentials"):
            value = _fill(doc, ("deployments", index), {"credentials": inputs["credentials"]}).get("credentials")
            if value:
                image = _image(doc, index, deployment)
                return as_credentials(value, ImageRef.parse(image.plan.repository).registry if image is not None else None)
    return None
