"""Rendering and building an :class:`~prefect_flyimage.spec.Image` (a mixin of ``Image``), and
:class:`SpecDockerImage`, Prefect's ``DockerImage`` interface for one."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, TextIO, Union

from ..context import BuildContext
from ..credentials import CredentialsLike, RegistryCredentials, as_credentials
from ..errors import SpecError
from ..names import ImageRef
from ..plan import BuildPlan, BuildResult, BuildSecret
from . import _checks, config
from ._context import SpecContext

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["SpecDockerImage"]


class _Building:
    """The plan (one identity), staging for a look, building and pushing."""

    # ---- rendering and the plan --------------------------------------------------------
    def _render(self, stage_root: Optional[Path] = None, record: Optional[list[Any]] = None) -> str:
        if self.dockerfile is not None:
            head = self.dockerfile.read_text().rstrip("\n")
        else:
            head = f"FROM {self.resolved_base_image}"
        lines = [head]
        for ctx, layer in zip(self._contexts(stage_root, record), self._layers):
            lines += layer.render(ctx)
        return "\n".join(lines) + "\n"

    def dockerfile_text(self) -> str:
        """The Dockerfile this spec builds with (nothing is copied or staged)."""
        self.validate()
        return self._render()

    def spec_hash(self) -> str:
        """The hash of this image's :class:`~prefect_flyimage.plan.BuildPlan` (its one identity).

        Covers the rendered Dockerfile (base, every layer's lines), the platform, the
        secrets' ids and every file the layers copy (contents, modes, paths in the
        context). Not covered: where the files live on this machine, the registry and
        name (they are the URI's other parts), and the values of secrets.
        """
        self.validate()
        return self._plan().hash

    def _plan(self, **how: Any) -> BuildPlan:
        """The plan (no validation): rendered text, the described context, how to build."""
        secrets = self.secrets
        needs_buildkit = bool(secrets) or any(layer.needs_buildkit for layer in self._layers)
        common: dict[str, Any] = dict(
            platform=self.platform[0], secrets=secrets, backend="buildkit" if needs_buildkit else "auto", **how,
        )
        if self.dockerfile is not None and not self._layers:
            return BuildPlan.from_dockerfile(self.dockerfile.parent, self.repository, dockerfile=self.dockerfile.name, **common)
        record: list[Any] = []
        text = self._render(record=record)
        root = BuildContext(self.dockerfile.parent, self.dockerfile.name) if self.dockerfile is not None else None
        # The plan's folder only anchors it: the context is the described one.
        anchor = self.dockerfile.parent if self.dockerfile is not None else Path(tempfile.gettempdir())
        return BuildPlan(
            context=anchor, dockerfile_text=text, repository=self.repository,
            generated_context=SpecContext(record, root), **common,
        )

    @property
    def secrets(self) -> tuple[BuildSecret, ...]:
        """The BuildKit secrets the layers mount (one per id)."""
        seen: dict[str, BuildSecret] = {}
        for layer in self._layers:
            for s in layer.secrets:
                seen.setdefault(s.id, s)
        return tuple(seen.values())

    # ---- building ------------------------------------------------------------------
    def plan(self, *, network: Optional[str] = None, pull: bool = False, no_cache: bool = False) -> BuildPlan:
        """The :class:`~prefect_flyimage.plan.BuildPlan` of this image: its one identity.

        Nothing is copied: the context is described (the files where they are) and
        staged only when a build needs it. ``str(plan.ref)`` is :attr:`uri`; the backend
        is ``"buildkit"`` when a layer uses cache, bind or secret mounts.

        Args:
            network: network for ``RUN`` steps (``"host"`` where the default bridge has
                no way out); default ``$PREFECT_FLYIMAGE_BUILD_NETWORK`` or
                ``build_network`` in ``[tool.prefect-flyimage]``.
            pull: always pull a newer base image.
            no_cache: build without the layer cache.

        Raises:
            SpecError: the spec is invalid, refers to an existing image (nothing to
                build), or a secret's source is missing.
        """
        _checks.check_call("plan", locals())
        problems = self.problems()
        if not problems and self.is_reference:
            problems.append(
                f"{self.resolved_base_image} is an existing image; there is nothing to build. "
                "Add a layer, or clone(name=..., registry=...) to copy it into another registry"
            )
        problems += self._secret_problems()
        if problems:
            raise SpecError(problems)
        if network is None:
            network = config.load_settings().get("build_network", env=config.ENV_PREFIX + "BUILD_NETWORK")
        return self._plan(network=network, pull=pull, no_cache=no_cache)

    def to_plan(
        self,
        context_dir: Union[Path, str, None] = None,
        *,
        network: Optional[str] = None,
        pull: bool = False,
        no_cache: bool = False,
    ) -> BuildPlan:
        """:meth:`plan`, with its context staged into ``context_dir`` when one is given.

        Staging is only for looking at the context (or handing the folder to another
        tool): the plan, its hash and :attr:`uri` are the same either way, and a build
        stages by itself when it needs to.

        Args:
            context_dir: an empty (or missing) folder to copy the context into; the
                plan's ``context`` is then that folder. A :meth:`from_dockerfile` image
                without layers builds its own folder and stages nothing.
            network, pull, no_cache: see :meth:`plan`.
        """
        _checks.check_call("to_plan", locals())
        plan = self.plan(network=network, pull=pull, no_cache=no_cache)
        if context_dir is None or plan.generated_context is None:
            return plan
        root = Path(context_dir)
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise SpecError([f"context_dir {str(root)!r} must be empty: the build context is staged into it"])
        plan.generated_context.stage(root)
        plan.generated_context.staged_at = root
        return plan.with_(context=root)

    @contextmanager
    def staged_plan(self, **options: Any) -> Iterator[BuildPlan]:
        """``with image.staged_plan() as plan:`` -- :meth:`to_plan` in a temporary folder removed afterwards."""
        tmp = Path(tempfile.mkdtemp(prefix="prefect-flyimage-spec-"))
        try:
            plan = self.to_plan(tmp, **options)
            yield plan
        finally:
            if plan.generated_context is not None:
                plan.generated_context.staged_at = None
            shutil.rmtree(tmp, ignore_errors=True)

    def credentials(self) -> Optional[RegistryCredentials]:
        """Credentials from ``registry_secret`` (a saved prefect-docker block is loaded by name)."""
        secret = self._registry_secret
        if secret is None:
            return None
        if isinstance(secret, str):
            try:
                from prefect_docker.credentials import DockerRegistryCredentials
            except ImportError:  # pragma: no cover - prefect-docker is a dependency
                raise SpecError([f"registry_secret {secret!r} names a block, but prefect-docker is not installed"]) from None
            secret = DockerRegistryCredentials.load(secret, _sync=True)
        return as_credentials(secret, registry=ImageRef.parse(f"{self.repository}:x").registry)

    def build(
        self,
        push: bool = True,
        credentials: CredentialsLike = None,
        force: bool = False,
        stream_progress_to: Optional[TextIO] = None,
        *,
        network: Optional[str] = None,
        engine: Optional["Engine"] = None,
        build_timeout: Optional[float] = None,
        push_timeout: Optional[float] = None,
        append: bool = True,
    ) -> BuildResult:
        """Build (and with ``push``, push) the image unless :attr:`uri` already exists.

        With ``push=True`` a registry that already holds :attr:`uri` means nothing is
        staged, built or pushed; with ``push=False`` a local image tagged :attr:`uri`
        from this spec does. Otherwise the context is staged in a temporary folder
        and :func:`prefect_flyimage.pipeline.ensure` builds and pushes. An image that
        is only a reference (:attr:`is_reference`) is returned as is.

        Args:
            push: also push to the registry.
            credentials: registry credentials (default: from ``registry_secret``, else
                the Docker client's login).
            force: rebuild and re-push even if the image exists.
            stream_progress_to: a stream for build and push output.
            network, engine, build_timeout, push_timeout: see :meth:`to_plan` and
                :func:`~prefect_flyimage.pipeline.ensure`.
            append: ``False`` turns the code-only path off (with ``push``, a code-only
                change is built in the daemon and pushed, not appended in the registry),
                like ``$PREFECT_FLYIMAGE_APPEND=0``. Not hashed: the URI is the same.
        """
        _checks.check_call("build", locals())
        from ..pipeline import ensure

        if self.is_reference:
            # An existing image: nothing to build, push or hash (no plan, so no plan hash).
            uri = self.uri
            return BuildResult(reference=uri, plan_hash="", tags=(ImageRef.parse(uri).tag or "latest",))
        problems = self.problems()
        if push and not self.effective_registry:
            problems.append(
                "pushing needs a registry: pass registry= (e.g. 'ghcr.io/acme'), set $PREFECT_FLYIMAGE_REGISTRY, "
                "or build with push=False"
            )
        if problems:
            raise SpecError(problems)
        creds = as_credentials(credentials, registry=ImageRef.parse(f"{self.repository}:x").registry) or self.credentials()
        plan = self.plan(network=network)
        return ensure(
            plan if append else plan.with_(append=False), push=push, force=force, credentials=creds, stream_progress_to=stream_progress_to,
            engine=engine, build_timeout=build_timeout, push_timeout=push_timeout,
        )

    def push(self, credentials: CredentialsLike = None, stream_progress_to: Optional[TextIO] = None, **options: Any) -> BuildResult:
        """Make sure :attr:`uri` is in the registry: ``build(push=True)`` (a no-op when it is)."""
        return self.build(push=True, credentials=credentials, stream_progress_to=stream_progress_to, **options)

    def to_docker_image(
        self,
        credentials: CredentialsLike = None,
        stream_progress_to: Optional[TextIO] = None,
        **options: Any,
    ) -> "SpecDockerImage":
        """An object shaped like Prefect's ``DockerImage`` for ``flow.deploy(image=...)``.

        Its ``build()`` only builds and ``push()`` pushes, so ``deploy(push=False)`` keeps
        the image local. (Passing the ``Image`` itself also works, but its ``build()``
        pushes as well.)
        """
        return SpecDockerImage(self, credentials=credentials, stream_progress_to=stream_progress_to, **options)



class SpecDockerImage:
    """Prefect's ``DockerImage`` interface (``name``, ``tag``, ``reference``, ``build()``, ``push()``) for an :class:`Image`.

    ``build()`` builds locally (skipped when the image exists); ``push()`` pushes
    (skipped when the registry holds it). ``result`` is the last :class:`BuildResult`.
    """

    def __init__(self, image: Any, credentials: CredentialsLike = None,
                 stream_progress_to: Optional[TextIO] = None, **options: Any) -> None:
        self.image = image
        self.credentials = credentials
        self.stream_progress_to = stream_progress_to
        self.options = options
        self.result: Optional[BuildResult] = None
        self.dockerfile = "spec"

    @property
    def name(self) -> str:
        """The repository (``<registry>/<name>``), as Prefect's ``DockerImage.name``."""
        return self.image.repository

    @property
    def tag(self) -> str:
        """The URI's tag."""
        return self.image.tag

    @property
    def reference(self) -> str:
        """``name:tag``, i.e. the image's :attr:`Image.uri`."""
        return self.image.uri

    def build(self) -> None:
        """Build the image locally (no push)."""
        self.result = self.image.build(push=False, credentials=self.credentials,
                                       stream_progress_to=self.stream_progress_to, **self.options)

    def push(self) -> None:
        """Push the image (a no-op when the registry already holds it)."""
        self.result = self.image.build(push=True, credentials=self.credentials,
                                       stream_progress_to=self.stream_progress_to, **self.options)
