"""One image of a tree and its life: to_build -> built -> verified -> published.

Compatible with docker-pkg's ``ImageFSM`` (same states, properties and methods), but
built on the core pipeline: an image is identified by the content hash of its
rendered :class:`~prefect_flyimage.plan.BuildPlan`, which also covers its parents'
hashes, so a re-run skips what was built and verified before, and ``published``
means the registry holds exactly the digest built from this plan.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Optional, Union

from ..errors import FlyImageError, VerificationError, redact
from ..pipeline import Target, ensure, local_match, observe, push_local
from ..plan import BuildPlan
from .changelog import ImageSpec, read_spec
from .config import credentials, image_label, image_name, secrets, setting, state_dir
from ._engine_owner import EngineOwner
from .errors import IllegalTransitionError, TreeProblem, TreeSpecError
from .records import VerificationRecords
from .templates import TemplateRenderer
from .verify import proxy_env, run_verification

if TYPE_CHECKING:  # the client parameter type only; Docker is reached through Engine
    import docker

    from ..engine import Engine

log = logging.getLogger("prefect_flyimage.chain")

#: Label listing the plan hashes of an image's parents, so a changed parent changes the child's hash.
PARENTS_LABEL = "io.prefect-flyimage.chain.parents"

StateListener = Callable[["ImageFSM", str, str], None]


class _LogStream(io.TextIOBase):
    """A text stream that sends each complete line to a logger (build and push output)."""

    def __init__(self, logger: logging.Logger, hide: list[str]) -> None:
        self._logger, self._hide, self._buf = logger, hide, ""

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if line.strip():
                self._logger.info("%s", redact(line.rstrip(), self._hide))
        return len(text)


class ImageFSM(EngineOwner):
    """Finite state machine of one image folder.

    Args:
        root: the image folder (``Dockerfile.template`` and ``changelog``).
        client: a docker-py client, as docker-pkg callers pass; wrapped in an Engine.
        config: the tree configuration (``config.yaml`` keys).
        nocache: build without the layer cache (docker-pkg's default).
        pull: look the image up in the registry; with ``False`` no registry call is made.
        engine: an :class:`~prefect_flyimage.engine.Engine` to use instead of wrapping ``client``.
        renderer: the tree's template renderer (the builder passes its own).
        parents: the in-tree images this one depends on (their plan hashes enter this one's).
        inspect: find the state at once (docker-pkg did); ``False`` leaves it ``to_build``.
        spec: already-read folder metadata.
        records: where verifications are recorded (default: the config's ``state_dir``).
        plan: the image's build plan when already computed (skips rendering).
    """

    STATE_PUBLISHED = "published"
    "Image is in the target registry, with the digest built from this plan"

    STATE_VERIFIED = "verified"
    "Image has been built and verified"

    STATE_BUILT = "built"
    "Image is in the local Docker daemon"

    STATE_TO_BUILD = "to_build"
    "Image could not be found in the registry or the daemon"

    STATE_ERROR = "error"
    "Error state, e.g. a failure to build, verify or publish"

    STATES = [STATE_PUBLISHED, STATE_BUILT, STATE_TO_BUILD, STATE_VERIFIED, STATE_ERROR]
    "List of possible states"

    def __init__(
        self,
        root: str | Path,
        client: Optional["docker.DockerClient"],
        config: Mapping[str, Any],
        nocache: bool = True,
        pull: bool = True,
        *,
        engine: Optional["Engine"] = None,
        renderer: Optional[TemplateRenderer] = None,
        parents: Iterable["ImageFSM"] = (),
        inspect: bool = True,
        spec: Optional[ImageSpec] = None,
        records: Optional[VerificationRecords] = None,
        plan: Optional[BuildPlan] = None,
    ) -> None:
        self.config = config
        self.spec = spec or read_spec(Path(root).resolve())
        self.path = str(self.spec.folder)
        self.nocache = nocache
        self.pull = pull
        self._client = client
        self._engine = engine
        self.renderer = renderer or TemplateRenderer(config, {self.name: self.label})
        self.parents: list[ImageFSM] = list(parents)
        self.children: set[ImageFSM] = set()
        self.records = records or VerificationRecords(state_dir(config))
        self.listeners: list[StateListener] = []
        self._state = self.STATE_TO_BUILD
        self._lock = threading.RLock()
        self.image_id: Optional[str] = None
        self.digest: Optional[str] = None  #: registry digest, once published or found published
        #: a forced rebuild's publish replaces the registry's image: the digest it replaces (True: any)
        self.replace: Union[bool, str] = False
        self.error: Optional[str] = None  #: why the image is in error
        self.blocked_by: Optional[str] = None  #: failed parent that kept this image from building
        self.durations: dict[str, float] = {}
        if plan is not None:
            self.__dict__["plan"] = plan  # a plan computed elsewhere (e.g. by the flow), parents' hashes included
        if inspect:
            self.refresh_state()

    # ---- identity -----------------------------------------------------------------
    @property
    def short_name(self) -> str:
        """The image name from the changelog."""
        return self.spec.name

    @property
    def tag(self) -> str:
        """The image tag: the changelog version."""
        return self.spec.version

    @property
    def depends(self) -> list[str]:
        """Names of the images this one depends on (``control``)."""
        return list(self.spec.depends)

    @property
    def label(self) -> str:
        """The full label of the image, $registry/$ns/$name:$tag"""
        return image_label(self.config, self.short_name, self.tag)

    @property
    def name(self) -> str:
        """The image full name, $registry/$ns/$name"""
        return image_name(self.config, self.short_name)

    @property
    def duration(self) -> float:
        """Seconds spent building, verifying and publishing in this process."""
        return round(sum(self.durations.values()), 3)

    def __repr__(self) -> str:
        return f"ImageFSM({self.label}, {self.state})"

    # ---- state --------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The current state, one of :attr:`STATES`; listeners hear every change."""
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        if value not in self.STATES:
            raise ValueError(f"invalid state {value!r}; expected one of {self.STATES}")
        old, self._state = self._state, value
        if old != value:
            for listener in list(self.listeners):
                listener(self, old, value)

    # ---- plan ---------------------------------------------------------------------
    def render_dockerfile(self) -> str:
        """The rendered Dockerfile text (raises :class:`TreeSpecError` on a template error)."""
        return self.renderer.render(self.path, self.short_name)

    @cached_property
    def plan(self) -> BuildPlan:
        """The build plan: rendered Dockerfile, the image folder as context, parents' hashes as a label."""
        text = self.render_dockerfile()
        labels = {}
        if self.parents:
            labels[PARENTS_LABEL] = ",".join(f"{p.short_name}={p.plan.hash}" for p in sorted(self.parents, key=lambda p: p.short_name))
        try:
            return BuildPlan(
                context=Path(self.path),
                dockerfile_text=text,
                repository=self.name,
                tag=self.tag,
                build_args=tuple(proxy_env(self.config).items()),
                labels=tuple(labels.items()),
                network=setting(self.config, "build_network"),
                pull=False,  # base images are refreshed by the builder, parents are ours
                no_cache=self.nocache,
                backend="docker-py",
            )
        except (FlyImageError, ValueError) as exc:
            raise TreeSpecError([TreeProblem("tag", f"image {self.label} cannot be built: {exc}", (self.path,), self.short_name)]) from None

    # ---- inspection ---------------------------------------------------------------
    def _local_id(self) -> Optional[str]:
        return local_match(self.engine, self.plan)

    def _is_published(self) -> bool:
        """True when the registry's ``name:tag`` is the digest built from this plan.

        The content tag (a prefix of the plan hash) is pushed along with the version,
        so "same digest under both tags" proves the registry holds this plan's image.
        Asked with the config's credentials; a refused login raises.
        """
        if not self.config.get("registry"):
            return False
        target = Target(self.name, self.plan.hash, (self.tag,))
        seen = observe(target, credentials(self.config), self.engine, local=False)
        if seen.unreachable:
            log.warning("%s: registry unreachable, assuming not published: %s", self.label, seen.unreachable)
            return False
        if seen.remote_digest and not seen.published and seen.tag_digests.get(self.tag):
            log.warning(
                "%s is in the registry as %s, which was not built from the current plan %s; "
                "publishing will replace it (bump the changelog version instead)",
                self.label, seen.tag_digests[self.tag], self.plan.content_tag,
            )
        if not seen.published:
            return False
        self.digest = seen.remote_digest
        return True

    def refresh_state(self) -> str:
        """Find the state from the registry (when pulling), the daemon and the verification records."""
        with self._lock:
            try:
                plan = self.plan
            except TreeSpecError as exc:
                self.error = str(exc)
                self.state = self.STATE_TO_BUILD
                return self.state
            if self.pull and self._is_published():
                self.state = self.STATE_PUBLISHED
                return self.state
            local = self._local_id()
            self.image_id = local
            if local is None:
                self.state = self.STATE_TO_BUILD
            elif self.records.is_verified(plan.hash, local):
                self.state = self.STATE_VERIFIED
            else:
                self.state = self.STATE_BUILT  # built but never verified: verify before publishing
            return self.state

    # ---- transitions --------------------------------------------------------------
    def _fail(self, step: str, exc: BaseException | str) -> None:
        text = redact(str(exc), secrets(self.config))
        self.error = f"{step} failed: {text}"
        log.error("%s: %s", self.label, self.error)
        self.state = self.STATE_ERROR

    def _may(self, step: str, source: str, done: Optional[str] = None) -> bool:
        """Whether ``step`` runs: it does from ``source``, is skipped once in ``done``, and
        from any other state is an :class:`IllegalTransitionError`."""
        if done is not None and self.state == done:
            return False
        if self.state != source:
            raise IllegalTransitionError(self.label, self.state, step, [source] + ([done] if done else []))
        return True

    @contextlib.contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        """Record the seconds ``step`` takes in :attr:`durations`, whatever its outcome."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.durations[step] = round(time.monotonic() - started, 3)

    def build(self) -> None:
        """Build the image (skipped when the daemon holds the image of this exact plan)."""
        with self._lock:
            if not self._may("build", self.STATE_TO_BUILD, self.STATE_BUILT):
                return
            with self._timed("build"):
                try:
                    result = ensure(
                        self.plan, push=False, engine=self.engine,
                        stream_progress_to=_LogStream(log.getChild(self.short_name), secrets(self.config)),
                        build_timeout=setting(self.config, "build_timeout"),
                    )
                except Exception as exc:  # noqa: BLE001 - any failure puts this image (only) in error
                    self._fail("build", exc)
                else:
                    self.image_id = result.image_id
                    self.error = None
                    self.state = self.STATE_BUILT

    def verify(self) -> None:
        """Run the image's test (``test.sh``); a pass is recorded against the plan hash."""
        with self._lock:
            if not self._may("verify", self.STATE_BUILT, self.STATE_VERIFIED):
                return
            with self._timed("verify"):
                try:
                    if (self.image_id or self._local_id()) is None:
                        self._fail("verify", f"image {self.label} is not in the daemon")
                        return

                    def check(image_id: str) -> None:
                        # The pipeline's verify hook: it hands over the daemon's image of this plan.
                        self.image_id = image_id
                        if self.records.is_verified(self.plan.hash, image_id):
                            return  # verified by an earlier run
                        outcome = run_verification(self.path, self.label, self.config)
                        if not outcome.ok:
                            raise VerificationError(f"exit code {outcome.returncode}: {outcome.output[-2000:]}")
                        self.records.record(self.plan.hash, image_id, self.label)

                    ensure(self.plan, push=False, engine=self.engine, verify=check)
                    self.state = self.STATE_VERIFIED
                except VerificationError as exc:
                    self._fail("verification", exc)
                except Exception as exc:  # noqa: BLE001
                    self._fail("verify", exc)

    def publish(self) -> None:
        """Push the verified image as ``tag``, ``latest`` and its content tag; confirm the digest."""
        with self._lock:
            self._may("publish", self.STATE_VERIFIED)
            creds = credentials(self.config)
            if creds is None:
                self._fail("publish", "publishing needs registry, username and password in the config")
                return
            with self._timed("publish"):
                stream = _LogStream(log.getChild(self.short_name), secrets(self.config))
                try:
                    # The version tag last: it only moves once the content tag and latest are there.
                    # Always pushed (docker-pkg's publish): a verified image is what the tags must name,
                    # also when a forced rebuild made a new image of an unchanged plan.
                    result = push_local(
                        self.name, [self.plan.content_tag, "latest", self.tag], creds, plan_hash=self.plan.hash,
                        force=True, engine=self.engine, stream_progress_to=stream, replace=self.replace,
                    )
                    digest = result.digest
                except Exception as exc:  # noqa: BLE001
                    self._fail("publish", exc)
                else:
                    self.digest = digest
                    self.image_id = result.image_id or self.image_id
                    self.state = self.STATE_PUBLISHED

    # ---- plan changes from outside (the image refresh) ------------------------------
    def set_plan(self, plan: BuildPlan) -> None:
        """Build ``plan`` instead of the rendered one (e.g. with extra labels). Children read
        this image's plan hash when computing theirs: set parents' plans first."""
        with self._lock:
            self.__dict__["plan"] = plan

    def force_rebuild(self) -> None:
        """Make the next :meth:`build` build this plan anew although its image exists (the
        refresh's ``max_age`` and ``force``): no layer cache, and the daemon's content tag
        of the plan is dropped so the pipeline does not reuse the image."""
        with self._lock:
            self.set_plan(self.plan.with_(no_cache=True))
            # Replace the image the registry holds now, and only that one: another digest found
            # there at publish time is an earlier attempt of this rebuild, adopted.
            self.replace = self.digest or True
            self.engine.remove(self.plan.content_ref)
            self.image_id = None
            self.state = self.STATE_TO_BUILD

    # ---- tree ---------------------------------------------------------------------
    def add_child(self, img: "ImageFSM") -> None:
        """Declare another image as child of the current one"""
        self.children.add(img)

    def all_children(self) -> list["ImageFSM"]:
        """This image and all its direct and indirect children (no order; loop-safe)."""
        seen: set[ImageFSM] = set()
        todo: list[ImageFSM] = [self]
        while todo:
            img = todo.pop()
            if img not in seen:
                seen.add(img)
                todo.extend(img.children)
        return list(seen)


__all__ = ["ImageFSM", "PARENTS_LABEL"]
