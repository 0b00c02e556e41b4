"""``prefect.yaml`` build and push steps: drop-in for prefect-docker's, content-addressed.

Same parameters and return keys as ``prefect_docker.deployments.steps``
(``build_docker_image``, ``push_docker_image``), plus ``digest`` and ``cached`` (and a
few more) in every result, and an ``ensure_image`` step that builds and pushes in one.
Differences:

- the default ``tag`` is the plan's content tag, so an unchanged project reuses its image:
  ``build_docker_image`` skips the build when the daemon has it, ``push_docker_image``
  skips the push when the registry already holds that exact image;
- ``dockerfile: auto`` builds Prefect's default Dockerfile from memory (nothing is
  written unless ``persist_dockerfile``), and an existing ``Dockerfile`` is a typed error;
- ``ignore_cache: true`` forces a rebuild / re-push (prefect-docker: skip its in-process
  memo);
- errors are typed (:mod:`prefect_flyimage.errors`) and never contain the password;
- **code-only redeploys need no build**: when the Dockerfile splits (its steps after the
  last ``RUN`` only copy files and set metadata) and the registry already holds the
  dependency image, ``build_docker_image`` appends the code layer straight in the registry
  (no daemon: ``image_id`` is ``""``, ``digest`` is set) and ``push_docker_image`` then only
  confirms it (and puts any further tags) -- as ``push: true`` does (prefect-docker's
  buildx option: the build step pushes). The first deploy builds in the daemon, and its
  push step also publishes the dependency image, so the next code-only change appends.
  ``append: false`` on the build step opts out (the image is built in the daemon, e.g.
  for a local worker with no push step; ``$PREFECT_FLYIMAGE_APPEND=0`` everywhere).

Example::

    build:
      - prefect_flyimage.deployments.steps.build_docker_image:
          id: build-image
          requires: prefect-flyimage
          image_name: 127.0.0.1:5000/team/app
          dockerfile: auto
    push:
      - prefect_flyimage.deployments.steps.push_docker_image:
          requires: prefect-flyimage
          image_name: "{{ build-image.image_name }}"
          tag: "{{ build-image.tag }}"
          credentials: "{{ prefect.blocks.docker-registry-credentials.dev-registry }}"
    deployments:
      - name: app
        work_pool:
          name: docker-pool
          job_variables:
            image: "{{ build-image.image }}"
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypedDict

from .. import _args, pipeline
from .._mirror import check_mirrors
from .._append_path import confirm_appended, dependency_published, seed_dependency
from ..credentials import CredentialsLike, RegistryCredentials, as_credentials
from ..docker_image import plan_for_build, resolve_image_name, split_name_and_tag
from ..dockerfile import default_dockerfile_text
from ..engine import Engine
from ..errors import BuildError, InvalidArgumentError
from ..names import ImageRef
from ..plan import TAG_LENGTH, BuildResult, build_arg_pairs

__all__ = [
    "BuildDockerImageResult",
    "EnsureImageResult",
    "PushDockerImageResult",
    "build_docker_image",
    "ensure_image",
    "push_docker_image",
    "push_reference",
]


class BuildDockerImageResult(TypedDict):
    """The result of :func:`build_docker_image` (prefect-docker's keys, then ours)."""

    image_name: str
    tag: str
    image: str
    image_id: str
    additional_tags: list[str]
    digest: Optional[str]  #: registry digest; ``None`` until pushed
    cached: bool  #: True when the build was skipped
    built: bool
    plan_hash: str
    content_tag: str
    mirrors: list[str]


class PushDockerImageResult(TypedDict):
    """The result of :func:`push_docker_image` (prefect-docker's keys, then ours)."""

    image_name: str
    tag: Optional[str]
    image: str
    additional_tags: list[str]
    digest: str
    cached: bool  #: True when the registry already held the image: nothing pushed
    pushed: bool
    pinned: str  #: ``image_name@digest``
    mirrors: list[str]  #: further repositories holding it (the ``mirrors`` argument)


class EnsureImageResult(TypedDict):
    """The result of :func:`ensure_image`."""

    image_name: str
    tag: str
    image: str
    image_id: Optional[str]
    additional_tags: list[str]
    digest: Optional[str]
    cached: bool  #: nothing built and nothing pushed
    built: bool
    pushed: bool
    pinned: str
    plan_hash: str
    content_tag: str


#: prefect-docker's hint for a build the registry refused (word for word).
DENIED_HINT = (
    "Docker reported access denied. This can happen if the base image requires "
    "authentication, if you are not logged in to the registry, or if the image "
    "name is invalid. Check your image name (no spaces) and run `docker login` "
    "for the registry you are using."
)


def _ensure(plan: Any, **kwargs: Any) -> BuildResult:
    """``pipeline.ensure``; a build error that says "denied" gets prefect-docker's hint."""
    try:
        return pipeline.ensure(plan, **kwargs)
    except BuildError as exc:
        message = str(exc)
        if "denied" in message.lower() and DENIED_HINT not in message:
            # Same exception (type, step, output), message extended as prefect-docker does.
            exc.args = (f"{message}\n{DENIED_HINT}", *exc.args[1:])
        raise


@dataclass(frozen=True)
class _Built:
    """What a build step of this process made of ``name:tag``, for the push step after it."""

    plan: Any  #: the plan, its bases resolved
    result: BuildResult


#: ``(name, tag) -> _Built``: ``prefect deploy`` runs the build and push steps in one
#: process, so the push step knows an image the build step appended in the registry (the
#: daemon never saw it) and a plan whose dependency image it should publish too.
_BUILT: dict[tuple[str, str], _Built] = {}


def _image_name(image_name: str) -> tuple[str, Optional[str]]:
    _args.text("image_name", image_name)
    if any(ch.isspace() for ch in image_name):
        # prefect-docker's check, kept for its clearer message
        raise InvalidArgumentError(
            "image_name", f"Invalid Docker image name {image_name!r}. Image names cannot contain spaces. Use lowercase "
            "letters, numbers, and separators like '-', '_', '.', and '/'."
        )
    name, tag = split_name_and_tag(image_name)
    return resolve_image_name(name), tag


def _one_tag(image_name: str, in_name: Optional[str], tag: Optional[str]) -> Optional[str]:
    if in_name and tag and in_name != tag:
        raise InvalidArgumentError("tag", f"Only one tag can be provided - both {in_name!r} and {tag!r} were provided as tags.")
    return tag or in_name


def _prepare(
    image_name: str,
    dockerfile: str,
    tag: Optional[str],
    additional_tags: Optional[list[str]],
    persist_dockerfile: bool,
    dockerfile_output_path: Optional[str],
    build_backend: str,
    build_kwargs: dict[str, Any],
) -> tuple[Any, dict[str, Any], list[str]]:
    name, tag_in_name = _image_name(image_name)
    tag = _one_tag(image_name, _args.optional_text("tag", tag_in_name), _args.optional_text("tag", tag))
    context = build_kwargs.pop("path", None) or os.getcwd()
    _args.path("path", context)
    additional = _args.str_list("additional_tags", additional_tags)
    _args.boolean("persist_dockerfile", persist_dockerfile)
    _args.text("dockerfile_output_path", dockerfile_output_path)
    build_arg_pairs(build_kwargs.get("buildargs"))  # bad build args fail before anything is written
    if dockerfile == "auto" and persist_dockerfile:
        # Written before planning, so the file is part of the context from the first run
        # on and the content tag stays stable across runs.
        text = default_dockerfile_text(Path(context))
        output = Path(dockerfile_output_path or "Dockerfile.generated")
        print(f"Persisting the auto-generated Dockerfile to {output}; set 'dockerfile' to it to build it directly.")
        output.write_text(text)
    plan, extra = plan_for_build(
        name,
        context=context,
        dockerfile=dockerfile,
        tag=tag,
        extra_tags=additional,
        build_kwargs=build_kwargs,
        backend=build_backend,
    )
    return plan, extra, additional


def build_docker_image(
    image_name: str,
    dockerfile: str = "Dockerfile",
    tag: Optional[str] = None,
    additional_tags: Optional[list[str]] = None,
    ignore_cache: bool = False,
    persist_dockerfile: bool = False,
    dockerfile_output_path: str = "Dockerfile.generated",
    build_backend: str = "docker-py",
    append: bool = True,
    credentials: CredentialsLike = None,
    **build_kwargs: Any,
) -> BuildDockerImageResult:
    """Build a Docker image for a Prefect deployment, unless the daemon already has it.

    Args:
        image_name: image name with registry and repository (namespace defaults to
            ``PREFECT_DEFAULT_DOCKER_BUILD_NAMESPACE``).
        dockerfile: Dockerfile path relative to the context, or ``"auto"`` for Prefect's
            default Dockerfile (built from memory).
        tag: the tag; defaults to the plan's content tag (not a timestamp).
        additional_tags: further tags for the image.
        ignore_cache: rebuild even when the image exists.
        persist_dockerfile: with ``dockerfile="auto"``, also save the generated
            Dockerfile to ``dockerfile_output_path``.
        dockerfile_output_path: where ``persist_dockerfile`` writes (relative to the
            current directory).
        build_backend: prefect-docker's ``"docker-py"`` (default; BuildKit only for
            Dockerfiles that need it) or ``"buildx"`` (BuildKit); ``"auto"`` and
            ``"buildkit"`` too.
        append: ``False`` always builds in the daemon (no code layer appended in the
            registry; see the module docstring).
        credentials: for the registry when the build appends or pushes there (as
            :func:`push_docker_image`'s); default: the docker config (``docker login``).
            Without either, a registry that needs a login is not asked and the build
            goes to the daemon.
        **build_kwargs: docker-py build arguments; ``path`` is the context (default:
            the current directory), ``pull`` defaults to ``True`` as in prefect-docker;
            ``push: true`` (prefect-docker's buildx option) pushes in this step.

    Returns:
        ``image_name``, ``tag``, ``image`` (``name:tag``, for ``job_variables``),
        ``image_id`` (``""`` when the image was made in the registry, not the daemon),
        ``additional_tags``, ``digest`` (``None`` until pushed; set when pushed or
        appended), ``cached`` (the build was skipped), ``built``, ``plan_hash`` and
        ``content_tag``.
    """
    _args.boolean("ignore_cache", ignore_cache)
    _args.boolean("append", append)
    kwargs = dict(build_kwargs)
    push = kwargs.pop("push", False)  # prefect-docker's buildx option: the build pushes too
    _args.boolean("push", push)
    plan, extra, additional = _prepare(
        image_name, dockerfile, tag, additional_tags, persist_dockerfile, dockerfile_output_path, build_backend, kwargs,
    )
    if not append:
        plan = plan.with_(append=False)
    creds = as_credentials(credentials, ImageRef.parse(plan.repository).registry)
    plan = pipeline.resolve_bases(plan, creds)  # the dependency image's tag depends on the pinned bases
    if not push and not ignore_cache and dependency_published(plan, creds, extra):
        push = True  # this project publishes to that registry: append the code there now
    result = _ensure(
        plan, push=push, force=ignore_cache, credentials=creds, stream_progress_to=sys.stdout, build_kwargs=extra or None,
    )
    ref = ImageRef.parse(result.reference)
    if result.built:
        what = "built" + (" and pushed" if result.pushed else "")
    elif result.pushed:
        what = f"code appended in the registry (no build) {result.digest}"
    else:
        what = "already built (build skipped)" if result.image_id else f"already in the registry (build skipped) {result.digest}"
    print(f"{result.reference}: {what}")
    for t in dict.fromkeys((ref.tag or result.plan_hash[:TAG_LENGTH], *result.tags)):
        _BUILT[(plan.repository, t)] = _Built(plan, result)
    return {
        "image_name": plan.repository,
        "tag": ref.tag or result.plan_hash[:TAG_LENGTH],
        "image": result.reference,
        "image_id": result.image_id or "",
        "additional_tags": additional,
        "digest": result.digest,
        "cached": not result.built,
        "built": result.built,
        "plan_hash": result.plan_hash,
        "content_tag": result.plan_hash[:TAG_LENGTH],
        "mirrors": list(result.mirrors),
    }


def push_reference(
    name: str,
    tags: list[str],
    credentials: Optional[RegistryCredentials] = None,
    *,
    force: bool = False,
    engine: Optional[Engine] = None,
) -> BuildResult:
    """Push ``name:tag`` for each of ``tags`` (first = main) unless the registry holds them.

    The pipeline's :func:`~prefect_flyimage.pipeline.push_local`: without a plan, "the
    registry holds it" means the registry's digest for every tag is the main tag's, and
    that digest is one recorded for the local image (its ``RepoDigests``).
    """
    return pipeline.push_local(name, tags, credentials, force=force, engine=engine, stream_progress_to=sys.stdout)


def push_docker_image(
    image_name: str,
    tag: Optional[str] = None,
    credentials: CredentialsLike = None,
    additional_tags: Optional[list[str]] = None,
    ignore_cache: bool = False,
    build_backend: str = "docker-py",
    mirrors: Optional[list[str]] = None,
) -> PushDockerImageResult:
    """Push a Docker image to its registry, unless the registry already holds it.

    Args:
        image_name: image name with registry and repository.
        tag: the tag to push (``latest`` when omitted: prefect-docker would push every
            local tag of the repository).
        credentials: a dict with ``username``, ``password`` and ``registry_url`` (what a
            ``docker-registry-credentials`` block templates to), a
            ``DockerRegistryCredentials`` block or :class:`RegistryCredentials`; default:
            the docker config (``docker login``).
        additional_tags: further tags to push (tagged locally if missing).
        ignore_cache: push even when the registry already holds the image.
        build_backend: accepted for compatibility; pushes always go through the daemon.
        mirrors: further repositories (``host/path``) that get the same image under the
            same tags, copied registry to registry after the push and confirmed by digest
            (credentials: the docker config's for their registries).

    Returns:
        ``image_name``, ``tag``, ``image``, ``additional_tags``, ``digest``, ``cached``
        (nothing was pushed), ``pushed``, ``pinned`` (``image_name@digest``) and
        ``mirrors`` (the mirrors holding it).
    """
    name, tag_in_name = _image_name(image_name)
    tag = _one_tag(image_name, tag_in_name, _args.optional_text("tag", tag)) or "latest"
    additional = [t for t in _args.str_list("additional_tags", additional_tags) if t and t != tag]
    _args.boolean("ignore_cache", ignore_cache)
    creds = as_credentials(credentials, ImageRef.parse(name).registry)
    destinations = check_mirrors(mirrors, name)
    built = _BUILT.get((name, tag))
    if built is not None and built.result.digest and not ignore_cache:
        # The build step put it in the registry (appended, or pushed): confirm, no daemon.
        assert built.result.digest is not None
        result = confirm_appended(built.plan, name, built.result.digest, [tag, *additional], creds, built.result.plan_hash)
    else:
        result = push_reference(name, [tag, *additional], creds, force=ignore_cache)
        if built is not None and built.result.plan_hash == result.plan_hash:
            seed_dependency(built.plan, creds, sys.stdout)  # so the next code-only change appends
    assert result.digest is not None  # push_reference verified it against the registry
    result = pipeline.mirrored(result, destinations, creds, stream=sys.stdout)
    print(f"{result.reference}: {'pushed' if result.pushed else 'already in the registry (push skipped)'} {result.digest}")
    return {
        "image_name": name,
        "tag": tag,
        "image": f"{name}:{tag}",
        "additional_tags": additional,
        "digest": result.digest,
        "cached": not result.pushed,
        "pushed": result.pushed,
        "pinned": f"{name}@{result.digest}",
        "mirrors": list(result.mirrors),
    }


def ensure_image(
    image_name: str,
    dockerfile: str = "Dockerfile",
    tag: Optional[str] = None,
    additional_tags: Optional[list[str]] = None,
    push: bool = True,
    credentials: CredentialsLike = None,
    ignore_cache: bool = False,
    persist_dockerfile: bool = False,
    dockerfile_output_path: str = "Dockerfile.generated",
    build_backend: str = "docker-py",
    mirrors: Optional[list[str]] = None,
    append: bool = True,
    **build_kwargs: Any,
) -> EnsureImageResult:
    """Build and push in one step; each part runs only if its output is missing.

    Parameters as :func:`build_docker_image`, plus ``push`` (default ``True``) and
    ``credentials`` and ``mirrors`` (as :func:`push_docker_image`). With ``push``, a code-only change is
    appended in the registry (no daemon) whenever the Dockerfile splits (the dependency
    image is built and pushed first if the registry lacks it); ``append=False`` opts out. Returns the union of both steps'
    keys: ``image``, ``image_id``, ``digest``, ``pinned``, ``cached``, ``built``,
    ``pushed``, ...
    """
    _args.boolean("ignore_cache", ignore_cache)
    _args.boolean("push", push)
    plan, extra, additional = _prepare(
        image_name, dockerfile, tag, additional_tags, persist_dockerfile, dockerfile_output_path, build_backend,
        dict(build_kwargs),
    )
    _args.boolean("append", append)
    if not append:
        plan = plan.with_(append=False)
    result = _ensure(
        plan, push=push, force=ignore_cache, credentials=credentials, stream_progress_to=sys.stdout,
        build_kwargs=extra or None, mirrors=mirrors,
    )
    ref = ImageRef.parse(result.reference)
    done = [w for w, f in (("built", result.built), ("pushed", result.pushed)) if f]
    print(f"{result.reference}: {' and '.join(done) or 'up to date (nothing built or pushed)'}")
    return {
        "image_name": plan.repository,
        "tag": ref.tag or result.plan_hash[:TAG_LENGTH],
        "image": result.reference,
        "image_id": result.image_id,
        "additional_tags": additional,
        "digest": result.digest,
        "cached": result.cached,
        "built": result.built,
        "pushed": result.pushed,
        "pinned": result.pinned,
        "plan_hash": result.plan_hash,
        "content_tag": result.plan_hash[:TAG_LENGTH],
    }
