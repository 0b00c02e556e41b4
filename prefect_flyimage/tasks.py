"""Prefect tasks around the pipeline: login, build, push and ensure.

Every task

- retries transient failures only (:func:`is_transient`: an unreachable registry or
  daemon, a timeout) with exponential backoff; a refused login, a failing Dockerfile, a
  bad context or reference fails at once, since retrying cannot fix them;
- sends build output and push layer lines to its run logger (:class:`RunLoggerStream`);
- leaves a markdown artifact (:mod:`prefect_flyimage.artifacts`) keyed on the repository,
  also when the result came from the cache.

Caching (:class:`ImageCachePolicy`)
-----------------------------------
A Prefect cache key is computed *before* the task runs and cannot see whether the image
it once produced still exists. So the key covers three things: the plan hash, the target
(repository, tags, local or pushed) **and the image observed there now** — the registry
digest of every tag for a pushed target, the daemon's image id for a local one. That
observation is one cheap existence probe (no build, no push, no layer transfer):

- the image is where it should be: the key is ``plan + target + digest``. After a run
  that built or pushed, the task stores its result under exactly that key (as it will
  look when reused: nothing built, nothing pushed), so the *next* run is a Prefect cache
  hit (state ``Cached``) that never calls the pipeline;
- the image is gone (deleted from the daemon and/or the registry) or cannot be checked:
  the key is ``None``, Prefect skips its cache and the task runs, rebuilding or
  re-pushing as needed. A stale record can never be returned, because a re-built image
  has a new digest and therefore a new key.

``force=True`` bypasses the cache (and the pipeline's own existence checks).

Retries are configured with :data:`DEFAULT_RETRIES` / :data:`DEFAULT_RETRY_BACKOFF`
(environment ``PREFECT_FLYIMAGE_TASK_RETRIES`` / ``PREFECT_FLYIMAGE_TASK_RETRY_BACKOFF``)
or per task with :func:`configure_retries`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Optional, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.context import TaskRunContext
from prefect.logging import get_logger, get_run_logger
from prefect.tasks import exponential_backoff

from . import pipeline
from .artifacts import create_build_artifact
from .credentials import CredentialsLike, RegistryCredentials, as_credentials
from .engine import Engine
from . import _args
from ._mirror import check_mirrors
from .errors import (
    FlyImageError,
    InvalidArgumentError,
    is_transient,
    redact,
)
from .names import ImageRef
from .plan import TAG_LENGTH, BuildPlan, BuildResult
from ._append_path import dependency_published, path_of, seed_dependency
from ._task_details import explainer as _explainer
from ._task_details import why_now as _why_now
from ._task_details import with_details as _with_details

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_RETRY_BACKOFF",
    "ImageCachePolicy",
    "ImageTarget",
    "RunLoggerStream",
    "build_image_task",
    "configure_retries",
    "ensure_image_task",
    "is_transient",
    "login_task",
    "publish_artifact",
    "push_image_task",
    "retry_delays",
    "retry_on_transient",
]

logger = get_logger("prefect_flyimage.tasks")


def _env_number(name: str, default: float, cast: type) -> Any:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return cast(default)
    try:
        return cast(value)
    except ValueError:
        raise InvalidArgumentError(f"${name}", f"must be a number, got {value!r}") from None


#: Retries of every task (``$PREFECT_FLYIMAGE_TASK_RETRIES``, default 3).
DEFAULT_RETRIES: int = _env_number("PREFECT_FLYIMAGE_TASK_RETRIES", 3, int)
#: First retry delay in seconds, doubled for each further retry
#: (``$PREFECT_FLYIMAGE_TASK_RETRY_BACKOFF``, default 2).
DEFAULT_RETRY_BACKOFF: float = _env_number("PREFECT_FLYIMAGE_TASK_RETRY_BACKOFF", 2.0, float)


def retry_delays(retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_RETRY_BACKOFF) -> list[float]:
    """Exponential retry delays: ``backoff * 2**n`` for each of ``retries`` retries."""
    _args.non_negative_int("retries", retries)
    _args.non_negative_number("backoff", backoff)
    return exponential_backoff(backoff)(retries) if retries > 0 else [0.0]


# ---- which failures are worth retrying ---------------------------------------------

def retry_on_transient(task: Task[..., Any], task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when :func:`is_transient` says so."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result(raise_on_failure=True, _sync=True)
        except BaseException as raised:  # noqa: BLE001 - we only classify it
            exc = raised
    return exc is not None and is_transient(exc)


T = TypeVar("T", bound=Task[..., Any])


def configure_retries(
    task_: T, retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_RETRY_BACKOFF, jitter: Optional[float] = None
) -> T:
    """A copy of ``task_`` retrying transient failures ``retries`` times with exponential backoff.

    ``backoff`` is the first delay in seconds (doubled each retry); ``jitter`` is Prefect's
    ``retry_jitter_factor``. ``retries=0`` disables retries.
    """
    if jitter is not None:
        _args.non_negative_number("jitter", jitter)
    return task_.with_options(  # type: ignore[return-value]
        retries=retries,
        retry_delay_seconds=retry_delays(retries, backoff),
        retry_jitter_factor=jitter,
        retry_condition_fn=retry_on_transient,
    )


# ---- progress to the run logger ----------------------------------------------------

#: Push/pull progress-bar lines ("abc123: Pushing [==>   ] 1.2MB/5MB"): hundreds per layer.
PROGRESS_BAR = re.compile(r"^\S+: (Pushing|Pulling fs layer|Downloading|Extracting|Waiting|Preparing)\b")
_MAX_LINE = 64 * 1024


class RunLoggerStream(io.TextIOBase):
    """A write-only text stream that logs each complete line to a (run) logger.

    Give it to the pipeline as ``stream_progress_to``: build output and push layer
    lines become log lines of the current task run. Partial lines are held until their
    newline (or :meth:`close`); progress-bar lines matching ``skip`` are dropped; every
    string in ``secrets`` is replaced with ``***``.
    """

    def __init__(
        self,
        log: Optional[logging.Logger | logging.LoggerAdapter[Any]] = None,
        *,
        level: int = logging.INFO,
        secrets: Iterable[Optional[str]] = (),
        skip: Optional[re.Pattern[str]] = PROGRESS_BAR,
    ) -> None:
        super().__init__()
        self._log = log if log is not None else get_run_logger()
        self._level = level
        self._secrets = [s for s in secrets if s]
        self._skip = skip
        self._buffer = ""

    def writable(self) -> bool:
        """Always True: this stream only writes."""
        return True

    def write(self, text: str) -> int:
        """Buffer ``text`` and log every line it completes."""
        if self.closed:
            raise ValueError("write to a closed RunLoggerStream")
        self._buffer += text
        *lines, self._buffer = re.split(r"\r\n|\n|\r", self._buffer)
        if len(self._buffer) > _MAX_LINE:  # no newline in sight: do not grow without bound
            lines.append(self._buffer)
            self._buffer = ""
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        """No-op: a partial line waits for its end (the engine flushes after every chunk)."""

    def close(self) -> None:
        """Log any unfinished line, then close."""
        if not self.closed and self._buffer:
            self._emit(self._buffer)
            self._buffer = ""
        super().close()

    def _emit(self, line: str) -> None:
        line = redact(line.rstrip(), self._secrets)
        if not line.strip() or (self._skip is not None and self._skip.search(line)):
            return
        self._log.log(self._level, "%s", line)


# ---- cache policy ---------------------------------------------------------------------


@dataclass(frozen=True)
class ImageTarget:
    """Where an image should be: its plan, repository, tags, and local or pushed."""

    plan_hash: str
    repository: str
    tags: tuple[str, ...]
    push: bool

    @classmethod
    def of(cls, image: BuildPlan | BuildResult, push: bool) -> "ImageTarget":
        """The target of a plan or of a build result."""
        if isinstance(image, BuildPlan):
            return cls(image.hash, image.repository, image.all_tags, push)
        content = image.plan_hash[:TAG_LENGTH]
        tags = tuple(dict.fromkeys((*(image.tags or (image.tag,)), content)))
        return cls(image.plan_hash, image.repository, tuple(t for t in tags if t), push)

    @property
    def content_tag(self) -> str:
        """The plan's content tag."""
        return self.plan_hash[:TAG_LENGTH]

    def ref(self, tag: str) -> ImageRef:
        """``repository:tag``."""
        return ImageRef.parse(f"{self.repository}:{tag}")

    def key(self, observed: str) -> str:
        """The cache key for this target holding the image ``observed`` (digest or image id)."""
        where = "push" if self.push else "local"
        payload = "\0".join(("prefect-flyimage-cache-v1", self.plan_hash, self.repository, where, *self.tags, observed))
        return f"flyimage-{self.content_tag}-{where}-{hashlib.sha256(payload.encode()).hexdigest()[:32]}"

    @property
    def target(self) -> pipeline.Target:
        """The pipeline's :class:`~prefect_flyimage.pipeline.Target` of this image."""
        return pipeline.Target(self.repository, self.plan_hash, self.tags)

    def observe(self, engine: Optional[Engine] = None, credentials: Optional[RegistryCredentials] = None) -> Optional[str]:
        """The image this target holds now, or ``None`` if any of its tags is missing.

        Pushed target: the registry digest, if every tag has the content tag's digest
        (the registry alone is asked). Local target: the image id, if every tag names
        the image built from this plan (the daemon alone is asked).
        """
        seen = pipeline.observe(
            self.target, credentials, engine, local=not self.push, remote=self.push, every_local_tag=True,
        )
        if self.push:
            return seen.remote_digest if seen.published else None
        return seen.local_id if seen.complete_locally else None

    def produced(self, result: BuildResult) -> Optional[str]:
        """What :meth:`observe` will see once ``result`` exists: its digest or image id."""
        return result.digest if self.push else result.image_id


@dataclass
class ImageCachePolicy(CachePolicy):
    """Cache key = plan hash + target + the image observed at the target now.

    See the module docstring for why the observation is part of the key. Reads the task
    inputs ``plan`` (a :class:`BuildPlan`) or ``image`` (a :class:`BuildResult`),
    ``credentials`` and ``force``; ``push`` is taken from the inputs unless fixed here.
    Returns ``None`` (no caching, the task runs) when the image is missing, cannot be
    checked, or ``force`` is set.
    """

    push: Optional[bool] = None

    def target(self, inputs: dict[str, Any]) -> Optional[ImageTarget]:
        """The :class:`ImageTarget` the task inputs describe (``None`` if they describe none)."""
        image = inputs.get("plan", inputs.get("image"))
        if not isinstance(image, (BuildPlan, BuildResult)) or (isinstance(image, BuildResult) and not image.plan_hash):
            return None  # nothing to key on (a result without a plan names an existing image)
        push = bool(inputs.get("push", True)) if self.push is None else self.push
        return ImageTarget.of(image, push)

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> Optional[str]:
        """The key of the image as it exists now, or ``None`` to make the task run."""
        if inputs.get("force") or inputs.get("mirrors"):
            return None  # mirrors: the run checks each one (a few HEADs), a cache hit would not
        target = self.target(inputs)
        if target is None:
            return None
        try:
            creds = as_credentials(inputs.get("credentials"), ImageRef.parse(target.repository).registry)
            observed = target.observe(None, creds)
        except (FlyImageError, ValueError) as exc:
            # Let the task run: it reports the problem properly (and retries if transient).
            logger.debug("cache probe for %s failed (%s); running the task", target.repository, exc)
            return None
        if observed is None:
            where = "registry" if target.push else "Docker daemon"
            _run_logger().info(
                "%s:%s is not in the %s: cache bypassed, the task runs", target.repository, target.content_tag, where
            )
            return None
        return target.key(observed)


def _run_logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run (direct .fn() calls): plain logger
        return logger


def _remember(target: ImageTarget, result: BuildResult) -> None:
    """Store ``result`` under the key the next run will compute, so that run is a cache hit.

    Stored as it will be when reused: nothing built, nothing pushed, no timings.
    """
    ctx = TaskRunContext.get()
    observed = target.produced(result)
    if ctx is None or observed is None or not isinstance(ctx.task.cache_policy, ImageCachePolicy):
        return  # not a task run, nothing to key on, or caching turned off (with_options)
    expiration = None
    if ctx.task.cache_expiration is not None:
        expiration = datetime.now(timezone.utc) + ctx.task.cache_expiration
    try:
        ctx.result_store.write(
            obj=replace(result, built=False, pushed=False, timings={}),
            key=target.key(observed),
            expiration=expiration,  # type: ignore[arg-type]
        )
    except Exception as exc:  # noqa: BLE001 - the cache is an optimisation; the image is fine
        _run_logger().warning("could not store the cache record for %s: %s", result.reference, exc)


# ---- artifacts ------------------------------------------------------------------------


def publish_artifact(task_: Task[..., Any], task_run: Any, state: Any) -> None:
    """``on_completion`` hook: publish the run's :class:`BuildResult` as a markdown artifact.

    A hook rather than code in the task body, because on a cache hit the body never runs
    and the run should still leave its artifact (marked "cached (prefect cache)").
    """
    result = state.result(raise_on_failure=False, _sync=True)
    if not isinstance(result, BuildResult):
        return
    cache_hit = state.name == "Cached"
    if cache_hit:
        started = getattr(task_run, "start_time", None)
        ended = getattr(state, "timestamp", None)
        seconds = (ended - started).total_seconds() if started and ended else None
        result = replace(result, timings={} if seconds is None else {"total": round(seconds, 4)})
    create_build_artifact(
        [result],
        cache_hits=[cache_hit],
        description=f"{task_.name}: {result.reference}",
        task_run_id=getattr(task_run, "id", None),
        flow_run_id=getattr(task_run, "flow_run_id", None),
    )


# ---- tasks ----------------------------------------------------------------------------

_RETRY_OPTIONS: dict[str, Any] = dict(
    retries=DEFAULT_RETRIES,
    retry_delay_seconds=retry_delays(DEFAULT_RETRIES, DEFAULT_RETRY_BACKOFF),
    retry_condition_fn=retry_on_transient,
)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _image_task(name: str, task_run_name: str, cache_policy: Any) -> Callable[[Callable[_P, _R]], Task[_P, _R]]:
    """``@task`` options of the tasks that build or push an image: their cache policy, the
    image artifact on completion and the transient-failure retries."""
    return task(
        name=name, task_run_name=task_run_name, cache_policy=cache_policy,
        on_completion=[publish_artifact], **_RETRY_OPTIONS,
    )


def _secrets(creds: Optional[RegistryCredentials]) -> list[str]:
    return [creds.secret] if creds else []


@task(name="registry-login", cache_policy=NO_CACHE, **_RETRY_OPTIONS)
def login_task(credentials: CredentialsLike, write_config: bool = False) -> str:
    """Check ``credentials`` against their registry; return the registry host.

    Fails fast (:class:`AuthenticationError`, not retried) before a long build when the
    credentials are wrong. Pipeline pushes pass credentials explicitly, so nothing needs
    storing; ``write_config=True`` also runs ``docker login`` so tools that read the docker
    config (``DOCKER_CONFIG``) can push.
    """
    creds = as_credentials(credentials)
    if creds is None:
        raise InvalidArgumentError("credentials", "login_task needs credentials (RegistryCredentials, a DockerRegistryCredentials block or a dict)")
    with Engine() as engine:
        engine.login(creds)
        if write_config:
            engine.cli_login(creds)
    get_run_logger().info("logged in to %s as %s", creds.registry, creds.username)
    return creds.registry


@_image_task("build-image", "build {plan.repository}", ImageCachePolicy(push=False))
def build_image_task(
    plan: BuildPlan, force: bool = False, build_timeout: Optional[float] = None, append: bool = True,
) -> BuildResult:
    """Build ``plan`` into the local daemon unless its image is already there.

    Tags the image with every tag of the plan. ``force`` rebuilds regardless.

    Code-only changes: when the plan splits (its steps after the last ``RUN`` only copy
    files and set metadata) and its registry already holds the dependency image -- this
    project publishes there, a :func:`push_image_task` follows -- the code layer is
    appended in the registry instead (no daemon: the result has a ``digest``,
    ``pushed=True`` and no ``image_id``), and :func:`push_image_task` only confirms it. A
    build whose image is wanted in the daemon (no push after it) passes ``append=False``
    (or set ``$PREFECT_FLYIMAGE_APPEND=0``); while the registry lacks the dependency image
    (a first deploy, or a project never pushed) the image is built in the daemon anyway.
    """
    _args.build_plan("plan", plan)
    _args.boolean("append", append)
    creds = pipeline.plan_credentials(plan, None, pushing=False)
    if not append:
        plan = plan.with_(append=False)
    resolved = pipeline.resolve_bases(plan, creds)
    if not force and dependency_published(resolved, creds):
        why = _why_now(resolved, creds)
        with RunLoggerStream(secrets=_secrets(creds)) as stream:
            result = pipeline.ensure(resolved, push=True, credentials=creds, stream_progress_to=stream, build_timeout=build_timeout)
        result = replace(result, why=why) if result.pushed else result
        return _with_details(result, resolved, creds)
    found, hook = _explainer(plan, creds)
    with RunLoggerStream() as stream:
        result = pipeline.ensure(
            plan, push=False, force=force, stream_progress_to=stream, build_timeout=build_timeout,
            verify=hook,
        )
    result = replace(result, why=found.get("why")) if result.built else result
    result = _with_details(result, plan, creds)
    _remember(ImageTarget.of(plan, push=False), result)
    _BUILT_PLANS[result.plan_hash] = resolved  # push_image_task publishes its dependency image too
    return result


#: ``plan hash -> plan`` of the plans :func:`build_image_task` built in the daemon in this
#: process: :func:`push_image_task` (given only the result) then also publishes the plan's
#: dependency image, so the next code-only change appends. Tasks run in other processes
#: miss it (and the next redeploy builds once more).
_BUILT_PLANS: dict[str, BuildPlan] = {}


@_image_task("push-image", "push {image.reference}", ImageCachePolicy(push=True))
def push_image_task(
    image: BuildResult,
    credentials: CredentialsLike = None,
    force: bool = False,
    push_timeout: Optional[float] = None,
    mirrors: Optional[list[str]] = None,
) -> BuildResult:
    """Push every tag of a built image unless the registry already holds them.

    ``image`` is the result of :func:`build_image_task` (the image must be in the daemon).
    Returns the result with the registry ``digest`` and ``pushed``; ``built`` and the build
    timings are carried over so the last artifact tells the whole story. ``mirrors``:
    further repositories that get a copy, registry to registry (:func:`pipeline.ensure`).
    """
    if not isinstance(image, BuildResult):
        raise InvalidArgumentError("image", f"must be the BuildResult of build_image_task, not {type(image).__name__}")
    _args.timeout("push_timeout", push_timeout)
    creds = as_credentials(credentials, ImageRef.parse(image.repository).registry)
    destinations = check_mirrors(mirrors, image.repository)
    with RunLoggerStream(secrets=_secrets(creds)) as stream:
        result = _push(image, creds, force=force, stream=stream, timeout=push_timeout)
        result = pipeline.mirrored(result, destinations, creds, stream=stream)
        plan = _BUILT_PLANS.pop(image.plan_hash, None) if image.plan_hash else None
        if plan is not None:
            seed_dependency(plan, creds, stream)
    result = _with_details(result, None, creds or pipeline.plan_credentials(result, None))  # type: ignore[arg-type]
    _remember(ImageTarget.of(image, push=True), result)
    return result


def _push(
    image: BuildResult,
    creds: Optional[RegistryCredentials],
    *,
    force: bool,
    stream: Optional[io.TextIOBase],
    timeout: Optional[float],
    engine: Optional[Engine] = None,
) -> BuildResult:
    """The pipeline's :func:`~prefect_flyimage.pipeline.push_local` of a build result,
    with the build's timings carried over."""
    if not image.plan_hash:
        # An existing image (e.g. an ``Image`` spec that only names one): nothing to push.
        return image
    target = ImageTarget.of(image, push=True)
    pushed = pipeline.push_local(
        target.repository, target.tags, creds, plan_hash=target.plan_hash, force=force, engine=engine,
        stream_progress_to=stream, timeout=timeout,  # type: ignore[arg-type]
    )
    if not pushed.pushed:
        _run_logger().info("%s is already in the registry (%s): push skipped", image.reference, pushed.digest)
    timings = {k: v for k, v in image.timings.items() if k != "total"}
    timings.update({k: v for k, v in pushed.timings.items() if k != "total"})
    # The build's share of the total, plus this push's.
    timings["total"] = round(float(image.timings.get("total", 0.0)) + float(pushed.timings.get("total", 0.0)), 4)
    return replace(image, digest=pushed.digest, pushed=pushed.pushed, image_id=pushed.image_id or image.image_id, timings=timings)


@_image_task("ensure-image", "ensure {plan.repository}", ImageCachePolicy())
def ensure_image_task(
    plan: BuildPlan,
    push: bool = True,
    force: bool = False,
    credentials: CredentialsLike = None,
    build_timeout: Optional[float] = None,
    push_timeout: Optional[float] = None,
    mirrors: Optional[list[str]] = None,
) -> BuildResult:
    """Make sure the image of ``plan`` exists (built locally, and pushed when ``push``).

    The whole pipeline in one task (:func:`prefect_flyimage.pipeline.ensure`): an
    unchanged plan whose image is in place is a cache hit; a changed plan is built and
    pushed; an image deleted from the daemon and registry is rebuilt. ``mirrors``: further
    repositories that get a copy, registry to registry (:func:`pipeline.ensure`).
    """
    _args.build_plan("plan", plan)
    creds = pipeline.plan_credentials(plan, credentials)
    found, hook = _explainer(plan, creds)
    appends = push and not force and path_of(plan)[0] == "append"
    if appends:
        # The code-only path needs no image in the daemon: no verify hook (it would make the
        # pipeline build). The explanation is asked first, unless nothing is to be done.
        resolved = pipeline.resolve_bases(plan, creds)
        try:
            held = pipeline.observe(resolved, creds, local=False).published
        except FlyImageError:
            held = False  # ensure reports it
        if not held:
            found["why"] = _why_now(resolved, creds) or ""
    with RunLoggerStream(secrets=_secrets(creds)) as stream:
        result = pipeline.ensure(
            plan,
            push=push,
            force=force,
            credentials=creds,
            stream_progress_to=stream,
            build_timeout=build_timeout,
            push_timeout=push_timeout,
            verify=None if appends else hook,
            mirrors=mirrors,
        )
    if result.built or result.pushed:
        result = replace(result, why=found.get("why") or None)
    result = _with_details(result, plan, creds)
    _remember(ImageTarget.of(plan, push=push), result)
    return result
