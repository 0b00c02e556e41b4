"""One exception hierarchy for everything prefect-flyimage raises.

Every error names the input that caused it and, where one exists, the fix.
Secrets never appear in a message: callers pass them through :func:`redact`
before formatting anything that may contain them.
"""

from __future__ import annotations

from typing import Iterable, Optional


class FlyImageError(Exception):
    """Base class of every error raised by prefect-flyimage."""


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


class InvalidArgumentError(FlyImageError, ValueError):
    """A function was called with an argument of the wrong type or value; ``argument`` names it."""

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(f"{argument} {message}")


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
    """The Docker daemon cannot be reached (not running, wrong DOCKER_HOST, no permission)."""


class RegistryError(ImageBuildError):
    """Base class of errors talking to an image registry."""

    def __init__(self, message: str, registry: Optional[str] = None, *, returncode: Optional[int] = None, stderr: str = "") -> None:
        self.registry = registry
        super().__init__(message, returncode, stderr)


class AuthenticationError(RegistryError):
    """The registry refused the credentials (HTTP 401/403, "denied", "unauthorized")."""


class RegistryUnavailable(RegistryError):
    """The registry cannot be reached (connection refused, DNS, TLS, 5xx)."""


class BuildError(ImageBuildError):
    """Raised when a Docker build fails.

    Same name as Prefect's ``prefect.utilities.dockerutils.BuildError``. ``step`` is the
    Dockerfile step that failed (when known) and ``output`` the last lines of build output.
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


class PushError(RegistryError):
    """Raised when a Docker image push fails (same name as Prefect's ``PushError``)."""


class PushTimeout(PushError, TimeoutError):
    """A push that ran past its timeout and was aborted."""


class PushAuthenticationError(PushError, AuthenticationError):
    """A push refused for want of (valid) credentials: both a PushError and an AuthenticationError."""


class PushUnavailableError(PushError, RegistryUnavailable):
    """A push that could not reach the registry: both a PushError and a RegistryUnavailable."""


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
