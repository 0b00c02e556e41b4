"""One exception hierarchy for everything prefect-flyimage raises.

Every error names the input that caused it and, where one exists, the fix.
Secrets never appear in a message: callers pass them through :func:`redact`
before formatting anything that may contain them.

The tree (second bases only where a compatibility promise needs them)::

    FlyImageError
    ├── InvalidReferenceError          (ValueError)
    ├── ContextError                   (ValueError)
    │   ├── DockerfileNotFoundError    (+ BuildError: "Cannot locate specified Dockerfile", as Prefect)
    │   ├── DockerfileExistsError      (+ RuntimeError, as Prefect's generate_default_dockerfile)
    │   ├── ContextPathNotFoundError   (+ FileNotFoundError, as Prefect)
    │   └── FlyContextError            (+ ImageBuildError, as flaude)
    ├── SpecError                      (ValueError)
    │   ├── TreeSpecError
    │   └── ConfigError                (a YAML file: names file and line)
    │       └── RefreshConfigError
    ├── InvalidArgumentError           (ValueError; `argument` names the parameter)
    │   └── InvalidPrefectVersion      (+ packaging's InvalidVersion, as Prefect)
    ├── InvalidAppName                 (ValueError)
    ├── IllegalTransitionError         (ValueError, as docker-pkg)
    ├── ChainBuildError
    ├── ImageTaskFailed
    ├── BaseImageMissing
    │   └── BaseImageUnresolved        (`base`, `registry`: its digest cannot be looked up)
    ├── VerificationError
    ├── RefreshFailed
    ├── AppendNotApplicable            (the registry append cannot tell; the plan builds: never escapes ensure)
    └── ImageBuildError                (flaude's name: returncode, stderr)
        ├── DockerUnavailable          (RuntimeError, as Prefect's docker_client)
        ├── BuildError                 (Prefect's dockerutils.BuildError)
        │   └── BuildTimeout           (TimeoutError)
        └── RegistryError
            ├── AuthenticationError
            │   └── MissingFlyToken
            ├── RegistryUnavailable
            └── PushError              (OSError, as prefect-docker's push step; Prefect's dockerutils.PushError)
                ├── PushTimeout        (TimeoutError)
                ├── PushAuthenticationError (+ AuthenticationError)
                ├── PushUnavailableError    (+ RegistryUnavailable)
                └── MirrorError        (`destination` refused; `published`: the ones done)

Prefect's ``BuildError``/``PushError``: importing ``prefect`` costs seconds (2.7 s here),
too much for this core module, which imports no Prefect. So our classes take Prefect's
as an extra base the moment ``prefect.utilities.dockerutils`` is loaded (or at once if
it already is): an ``except`` written for Prefect's classes then catches ours.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any, Iterable, Optional, Sequence

from packaging.version import InvalidVersion

__all__ = [
    "AppendNotApplicable",
    "AuthenticationError",
    "BaseImageDenied",
    "BaseImageMissing",
    "BaseImageUnresolved",
    "BuildError",
    "BuildxUnavailable",
    "BuildTimeout",
    "ChainBuildError",
    "ConfigError",
    "ContextError",
    "ContextPathNotFoundError",
    "DockerUnavailable",
    "DockerfileExistsError",
    "DockerfileNotFoundError",
    "FlyContextError",
    "FlyImageError",
    "IllegalTransitionError",
    "ImageBuildError",
    "ImageTaskFailed",
    "InvalidAppName",
    "InvalidArgumentError",
    "InvalidPrefectVersion",
    "InvalidReferenceError",
    "MissingFlyToken",
    "PushAuthenticationError",
    "PushError",
    "MirrorError",
    "PushTimeout",
    "PushUnavailableError",
    "RefreshConfigError",
    "RefreshFailed",
    "RegistryError",
    "RegistryUnavailable",
    "SpecError",
    "TREE_PROBLEM_KINDS",
    "TreeSpecError",
    "VerificationError",
    "WorkerOSError",
    "is_transient",
    "redact",
]


class FlyImageError(Exception):
    """Base class of every error raised by prefect-flyimage."""


# ---- bad input ----------------------------------------------------------------------------


class InvalidReferenceError(FlyImageError, ValueError):
    """An image reference (name, tag or digest) does not follow the Distribution grammar.

    ``part`` names the offending component (``"repository"``, ``"tag"``, ``"digest"``,
    ``"registry"``) and ``value`` holds the text that was rejected.
    """

    def __init__(self, reference: str, part: str, value: str, reason: str) -> None:
        self.reference = reference
        self.part = part
        self.value = value
        self.reason = reason
        super().__init__(f"invalid image reference {reference!r}: {part} {value!r} {reason}")


class ContextError(FlyImageError, ValueError):
    """The build context (a folder, a Dockerfile, a file in it) is missing or unusable."""

    def __init__(self, message: str, path: Optional[object] = None) -> None:
        self.path = path
        super().__init__(message)


class SpecError(FlyImageError, ValueError):
    """An image specification is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the image spec:\n{lines}")


#: Maximum length of a Fly app name.
FLY_APP_NAME_MAX = 63


class InvalidArgumentError(FlyImageError, ValueError):
    """A function was called with an argument of the wrong type or value; ``argument`` names it."""

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(f"{argument} {message}")


class InvalidPrefectVersion(InvalidArgumentError, InvalidVersion):
    """A Prefect version that is not PEP 440: ours, and ``packaging``'s ``InvalidVersion`` as in Prefect."""


class WorkerOSError(OSError):
    """A hashing worker could not read a file: carries the worker's errno and message (internal)."""


class InvalidAppName(FlyImageError, ValueError):
    """A Fly app name breaks Fly's rules (lower-case letters, digits, dashes; starts with a letter; <= 63 chars)."""

    def __init__(self, app_name: object, reason: str) -> None:
        self.app_name = app_name
        self.reason = reason
        super().__init__(
            f"invalid Fly app name {app_name!r}: {reason} (Fly app names use lower-case letters, "
            f"digits and '-', start with a letter and have at most {FLY_APP_NAME_MAX} characters)"
        )


# ---- the build/login/push pipeline --------------------------------------------------------


class ImageBuildError(FlyImageError):
    """Raised when the Docker image build or push fails (flaude's name).

    The base of every failure of the build/login/push pipeline, so code written
    against flaude's ``except ImageBuildError`` catches them all.

    ``returncode`` is the exit code of the failed process, or ``None`` when no process ran;
    ``stderr`` is the (tail of the) captured standard error, possibly empty.
    """

    def __init__(self, message: str, returncode: Optional[int] = None, stderr: str = "") -> None:
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message)


class DockerUnavailable(ImageBuildError, RuntimeError):
    """The Docker daemon cannot be reached (not running, wrong DOCKER_HOST, no permission, no answer)."""


class BuildxUnavailable(DockerUnavailable):
    """The build needs BuildKit through ``docker buildx`` (several platforms, buildx-only
    options such as ``secrets``, ``ssh``, ``cache_from``, ``cache_to``) and the docker CLI
    has no buildx (Docker 20.10, or a newer CLI without the plugin)."""


class RegistryError(ImageBuildError):
    """Base class of errors talking to an image registry."""

    def __init__(self, message: str, registry: Optional[str] = None, *, returncode: Optional[int] = None, stderr: str = "") -> None:
        self.registry = registry
        super().__init__(message, returncode, stderr)


class AuthenticationError(RegistryError):
    """The registry refused the credentials (HTTP 401/403, "denied", "unauthorized")."""


class MissingFlyToken(AuthenticationError):
    """No Fly API token was found and ``flyctl`` is not installed."""


class RegistryUnavailable(RegistryError):
    """The registry cannot be reached (connection refused, DNS, TLS, 5xx)."""


class BuildError(ImageBuildError):
    """Raised when a Docker build fails.

    Same name as Prefect's ``prefect.utilities.dockerutils.BuildError`` (and a subclass of
    it once Prefect is loaded). ``step`` is the Dockerfile step that failed (when known)
    and ``output`` the last lines of build output.
    """

    def __init__(
        self,
        message: str,
        *,
        step: Optional[str] = None,
        output: Optional[str] = None,
        returncode: Optional[int] = None,
    ) -> None:
        self.step = step
        self.output = output
        super().__init__(message, returncode, output or "")


class BuildTimeout(BuildError, TimeoutError):
    """A build that ran past its timeout and was cancelled (its process group killed)."""


class BaseImageDenied(BuildError, AuthenticationError):
    """A build could not fetch a base image because its registry refused access (HTTP
    401/403): both a BuildError (``step`` is the ``FROM``) and an AuthenticationError.

    BuildKit words such a refusal as whatever its resolver last saw (a TLS error, "403
    Forbidden"); the engine then asks the registry itself to tell a refusal apart."""

    def __init__(
        self, message: str, registry: Optional[str], *, step: Optional[str] = None,
        output: Optional[str] = None, returncode: Optional[int] = None,
    ) -> None:
        # the two bases' __init__ take different arguments: set both sides' fields here
        self.step = step
        self.output = output
        self.registry = registry
        ImageBuildError.__init__(self, message, returncode, output or "")


class PushError(RegistryError, OSError):
    """Raised when a Docker image push fails (same name as Prefect's ``PushError``).

    Also an ``OSError``, which is what prefect-docker's ``push_docker_image`` step raises.
    """


class PushTimeout(PushError, TimeoutError):
    """A push that ran past its timeout and was aborted."""


class PushAuthenticationError(PushError, AuthenticationError):
    """A push refused for want of (valid) credentials: both a PushError and an AuthenticationError."""


class PushUnavailableError(PushError, RegistryUnavailable):
    """A push that could not reach the registry: both a PushError and a RegistryUnavailable."""


class MirrorError(PushError):
    """An extra destination (a mirror) could not be given the image after the primary push.

    ``destination`` is the repository that failed; ``published`` the mirrors that hold the
    image (confirmed by digest) before it failed; ``digest`` the image's. The primary
    registry holds the image: only the mirrors listed in ``published`` do too.
    """

    def __init__(
        self, message: str, destination: str, *, registry: Optional[str] = None, digest: Optional[str] = None,
        published: Sequence[str] = (),
    ) -> None:
        self.destination = destination
        self.digest = digest
        self.published = tuple(published)
        super().__init__(message, registry)

    def __reduce__(self) -> Any:  # keyword-only fields: rebuild from the message, then the state
        return (type(self), (self.args[0] if self.args else "", self.destination), dict(self.__dict__))


# ---- context errors with compatibility bases ----------------------------------------------


class DockerfileNotFoundError(ContextError, BuildError):
    """The Dockerfile to build does not exist ("Cannot locate specified Dockerfile", as Docker
    and Prefect say): both a :class:`ContextError` and a :class:`BuildError`."""

    def __init__(self, message: str, path: Optional[object] = None) -> None:
        BuildError.__init__(self, message)
        self.path = path


class DockerfileExistsError(ContextError, RuntimeError):
    """A ``Dockerfile`` already exists where one would be generated.

    Also a ``ValueError`` and a ``RuntimeError``: Prefect's ``ImageBuilder`` raises the
    former and its ``generate_default_dockerfile`` the latter in this situation.
    """


class ContextPathNotFoundError(ContextError, FileNotFoundError):
    """A build context or a file to copy into it does not exist.

    Also a ``FileNotFoundError``, which is what Prefect lets escape in these cases.
    """


class FlyContextError(ContextError, ImageBuildError):
    """The docker context or its Dockerfile is missing (no process ran, ``returncode`` is ``None``).

    Both a :class:`ContextError` and, as in flaude, an :class:`ImageBuildError`.
    """

    def __init__(self, message: str, path: Optional[object] = None) -> None:
        ImageBuildError.__init__(self, message, None, "")
        self.path = path


# ---- trees, refresh ------------------------------------------------------------------------

#: Kinds of tree problems, in the order they are reported.
TREE_PROBLEM_KINDS = ("metadata", "duplicate", "missing-dependency", "cycle", "template", "tag", "numeric-user")


class TreeSpecError(SpecError):
    """An image tree cannot be built as written; :attr:`issues` lists every problem found.

    Raised once with *all* problems (cycles, duplicate names, missing dependencies,
    template errors, invalid tags) before anything is built. Each issue is a
    ``chain.errors.TreeProblem`` (``kind``, ``message``, ``folders``, ``image``).
    """

    def __init__(self, issues: Iterable[Any]) -> None:
        order = {k: i for i, k in enumerate(TREE_PROBLEM_KINDS)}
        self.issues: list[Any] = sorted(dict.fromkeys(issues), key=lambda p: (order.get(p.kind, 99), p.folders, p.message))
        super().__init__(str(p) for p in self.issues)

    def of_kind(self, kind: str) -> list[Any]:
        """The problems of one kind."""
        return [p for p in self.issues if p.kind == kind]


class IllegalTransitionError(FlyImageError, ValueError):
    """An :class:`~prefect_flyimage.chain.ImageFSM` was asked for a step its state forbids.

    A ``ValueError`` too, as docker-pkg raised ``ValueError`` for the same mistakes.
    """

    def __init__(self, image: str, state: str, action: str, allowed: Sequence[str]) -> None:
        self.image = image
        self.state = state
        self.action = action
        self.allowed = tuple(allowed)
        super().__init__(
            f"cannot {action} image {image}: it is in state {state!r} "
            f"(only from {', '.join(repr(s) for s in allowed)})"
        )


class ChainBuildError(FlyImageError):
    """A tree run finished with images in error; :attr:`failed` and :attr:`blocked` name them."""

    def __init__(self, failed: Sequence[str], blocked: Sequence[str] = ()) -> None:
        self.failed = list(failed)
        self.blocked = list(blocked)
        msg = f"{len(self.failed)} image(s) failed: {', '.join(self.failed)}"
        if self.blocked:
            msg += f"; {len(self.blocked)} not built because a parent failed: {', '.join(self.blocked)}"
        super().__init__(msg)


class ImageTaskFailed(FlyImageError):
    """An image task ended in error; ``outcome`` says where (picklable for remote runners)."""

    def __init__(self, message: str, outcome: dict[str, Any]) -> None:
        super().__init__(message, outcome)
        self.message = message
        self.outcome = outcome

    def __str__(self) -> str:
        return self.message


class ConfigError(SpecError):
    """A configuration file (YAML) is malformed or of the wrong shape.

    ``problems`` lists every problem, each starting ``file:line:``; ``path`` is the file.
    """

    def __init__(self, problems: Iterable[str], path: Optional[object] = None) -> None:
        super().__init__(problems)
        self.path = path
        lines = "\n".join(f"  - {p}" for p in self.problems)
        where = f" in {path}" if path else ""
        self.args = (f"{len(self.problems)} problem(s){where}:\n{lines}",)


class RefreshConfigError(ConfigError):
    """The image-refresh configuration (``flows/refresh.yaml``) is invalid."""


class BaseImageMissing(FlyImageError):
    """A base image named by a Dockerfile is in neither its registry nor the daemon."""


class BaseImageUnresolved(BaseImageMissing):
    """A base image's digest could not be looked up (absent, refused, registry down).

    Set ``PREFECT_FLYIMAGE_OFFLINE_BASES=1`` to build by tag instead.
    """

    def __init__(self, base: str, registry: str, why: str) -> None:
        self.base, self.registry = base, registry
        super().__init__(
            f"base image {base} (registry {registry}) cannot be resolved to a digest: {why}; "
            "set PREFECT_FLYIMAGE_OFFLINE_BASES=1 to build it by tag"
        )


class AppendNotApplicable(FlyImageError):
    """Only a build can make this image as a build would (e.g. a ``WORKDIR`` created as a
    named ``USER``): the pipeline builds instead of appending in the registry."""


class VerificationError(FlyImageError):
    """A rebuilt image failed its verification; it is not published."""


class RefreshFailed(FlyImageError):
    """Some images of an image-refresh run could not be checked, rebuilt or published."""


# ---- Prefect's BuildError and PushError, without importing Prefect ---------------------------

_PREFECT_DOCKERUTILS = "prefect.utilities.dockerutils"


def _join_prefect(module: Any) -> None:
    """Give our BuildError/PushError Prefect's classes as extra bases (layouts are compatible)."""
    for ours, name in ((BuildError, "BuildError"), (PushError, "PushError")):
        theirs = getattr(module, name, None)
        if isinstance(theirs, type) and not issubclass(ours, theirs):
            ours.__bases__ = (*ours.__bases__, theirs)


class _JoinPrefectOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds nothing itself: wraps the loader of Prefect's dockerutils to join it once loaded."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != _PREFECT_DOCKERUTILS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _JoiningLoader(spec.loader)
                return spec
        return None


class _JoiningLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        _join_prefect(module)


if _PREFECT_DOCKERUTILS in sys.modules:
    _join_prefect(sys.modules[_PREFECT_DOCKERUTILS])
elif not any(isinstance(f, _JoinPrefectOnImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _JoinPrefectOnImport())


# ---- rules ------------------------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """True for failures a retry may cure; the one rule every retrying task uses.

    Transient: an unreachable registry (:class:`RegistryUnavailable`, including
    :class:`PushUnavailableError`) or daemon (:class:`DockerUnavailable`), and any
    ``TimeoutError``/``ConnectionError`` — among them :class:`BuildTimeout` and
    :class:`PushTimeout` (a slow mirror or link may be faster next time). Permanent:
    a refused login (checked first: :class:`PushAuthenticationError` is a
    ``PushError`` too), a failing Dockerfile step, bad input, and everything else.
    """
    if isinstance(exc, AuthenticationError):
        return False
    return isinstance(exc, (RegistryUnavailable, DockerUnavailable, TimeoutError, ConnectionError))


def redact(text: str, secrets: Iterable[Optional[str]]) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` with ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
