"""The :class:`Engine`: daemon, registry and classic-builder calls through docker-py.

BuildKit builds (cache and secret mounts, heredocs, several platforms) are in
:mod:`._buildkit`, through the ``docker`` CLI. Every Docker failure is translated
into the :mod:`prefect_flyimage.errors` hierarchy here, with secrets redacted.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import weakref
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, TextIO

import docker
import docker.errors
import docker.utils.build as build_utils

from ..context import read_dockerignore
from ..credentials import RegistryCredentials, retry_refused
from ..errors import (
    AuthenticationError,
    BuildError,
    BuildTimeout,
    BuildxUnavailable,
    DockerUnavailable,
    FlyImageError,
    InvalidReferenceError,
    PushError,
    PushTimeout,
    RegistryError,
    RegistryUnavailable,
    redact,
)
from ..names import ImageRef
from ._docker import TRANSPORT_ERRORS, StreamAborter, Watchdog, new_client, streaming_api
from ._buildkit import STEP, build_buildkit, choose_backend
from ._buildx import BUILDX_OPTIONS, CACHE_AUTH
from ._process import TAIL_LINES, buildx_available, docker_cli, write
from ._registry_errors import AUTH_PATTERNS, MISSING_PATTERNS, UNREACHABLE_PATTERNS, classify_registry_error
from ._types import LocalImage

if TYPE_CHECKING:
    from ..plan import BuildPlan

__all__ = ["BUILDX_OPTIONS", "GENERATED_DOCKERFILE", "Engine", "choose_backend", "docker_client"]

#: Name under which a generated Dockerfile travels in the context archive (fixed, so
#: that the same plan always sends the same bytes).
GENERATED_DOCKERFILE = ".flyimage.Dockerfile"

_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")


@contextlib.contextmanager
def docker_client() -> Iterator[docker.DockerClient]:
    """Get the environmentally-configured Docker client (Prefect's ``docker_client``).

    Unlike Prefect's, only a failure to *reach* the daemon becomes
    :class:`DockerUnavailable` (a ``RuntimeError``): errors raised inside the block
    (a registry's "denied", a missing image) pass through unchanged instead of being
    reported as "Docker is not running".
    """
    client = new_client()
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def _transport(doing: str) -> Iterator[None]:
    """Map a lost connection to the daemon (only that) to :class:`DockerUnavailable`."""
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        raise DockerUnavailable(f"lost the Docker daemon while {doing}: {exc}") from None

def _local_daemon() -> bool:
    """True when DOCKER_HOST is a unix socket, i.e. the daemon shares this kernel."""
    return os.environ.get("DOCKER_HOST", "unix://").startswith("unix://")


class Engine:
    """Docker operations the pipeline needs, with errors translated.

    Args:
        client: a docker-py ``DockerClient`` to use (e.g. one a docker-pkg caller made);
            by default one is made from the environment on first use.
    """


    def __init__(self, client: Optional[docker.DockerClient] = None) -> None:
        self._client = client
        self._owns_client = client is None
        self._bridge: Optional[bool] = None
        self._containerd_store: Optional[bool] = None

    def close(self) -> None:
        """Close the docker-py client if this engine created it (idempotent)."""
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def registry_cache(self) -> bool:
        """Whether the pipeline adds the default registry layer cache to pushing builds:
        only where buildx's docker driver can export one, i.e. on the containerd image
        store (the classic store of Docker < 29 fails the whole build: "Cache export is
        not supported for the docker driver"). Asked once per engine."""
        if self._containerd_store is None:
            try:
                status = self.client.info().get("DriverStatus") or []
            except docker.errors.APIError:
                status = []
            self._containerd_store = any("containerd.snapshotter" in str(value) for row in status for value in row)
        return self._containerd_store

    @property
    def connected(self) -> bool:
        """True once a docker-py client exists (nothing connects before it is needed)."""
        return self._client is not None

    @property
    def client(self) -> docker.DockerClient:
        """The docker-py client, created from the environment on first use (lazily:
        an engine that is never asked anything never talks to the daemon)."""
        if self._client is None:
            self._client = new_client()
            self._owns_client = True
            # A safety net for engines dropped without close(): their sockets close with them.
            weakref.finalize(self, self._client.close)
        return self._client

    def default_build_network(self) -> Optional[str]:
        """Network for RUN steps when the plan names none: the daemon's default, or
        ``host`` when the daemon has no bridge interface.

        A daemon started with ``--bridge=none`` (as ``scripts/services.sh`` does, so no
        container sits on a private-range bridge) has no default network: BuildKit then
        fails every RUN step ("network bridge not found") and the classic builder runs
        them offline. Users expect builds to reach package indexes, so use the host's
        network, which is what such daemons are meant to be used with.
        """
        if self._bridge is None:
            try:
                nets = self.client.api.networks(names=["bridge"])
                iface = (nets[0].get("Options") or {}).get("com.docker.network.bridge.name", "docker0") if nets else None
                # The network may be listed while its interface is gone; ask the kernel.
                self._bridge = bool(iface) and os.path.exists(f"/sys/class/net/{iface}") if _local_daemon() else bool(nets)
            except docker.errors.APIError:
                self._bridge = True
        return None if self._bridge else "host"

    @contextlib.contextmanager
    def _streaming_call(self, timeout: Optional[float], timed_out: Callable[[], Exception], doing: str) -> Iterator[docker.APIClient]:
        """A dedicated low-level client for one long streaming call (build or push).

        On timeout its connection is shut down (the daemon then cancels the operation) and
        ``timed_out()`` is raised; a connection lost otherwise is :class:`DockerUnavailable`;
        anything else (a bug) propagates unchanged.
        """
        with _transport("connecting"):
            api = streaming_api(self.client)
        aborter = StreamAborter(api)
        watchdog = Watchdog(timeout, aborter)
        try:
            yield api
        except Exception as exc:
            if watchdog.fired:
                raise timed_out() from None
            if isinstance(exc, TRANSPORT_ERRORS):
                raise DockerUnavailable(f"lost the Docker daemon while {doing}: {exc}") from None
            raise
        finally:
            watchdog.cancel()
            aborter.close()
        if watchdog.fired:
            raise timed_out()

    # ---- images in the daemon -------------------------------------------------
    def local_image(self, ref: ImageRef | str) -> Optional[LocalImage]:
        """The daemon's image for ``ref`` (tag, ``name@digest`` or id), or ``None`` if it is not there."""
        try:
            with _transport(f"inspecting {ref}"):
                return LocalImage.from_inspect(self.client.api.inspect_image(str(ref)))
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return None
            raise FlyImageError(f"cannot inspect image {str(ref)!r}: {exc.explanation}") from None

    def list_tags(self, repository: str) -> list[str]:
        """Tags of the local images named ``repository`` (bare tags, without the name)."""
        found: set[str] = set()
        with _transport(f"listing {repository}"):
            images = self.client.api.images(name=repository)
        for image in images:
            for text in image.get("RepoTags") or []:
                try:
                    ref = ImageRef.parse(text)
                except InvalidReferenceError:
                    continue  # "<none>:<none>" of an untagged image
                if ref.name == repository and ref.tag:
                    found.add(ref.tag)
        return sorted(found)

    def tag(self, image: str, ref: ImageRef | str) -> None:
        """Tag ``image`` (id or reference) as ``ref``."""
        r = ImageRef.parse(str(ref))
        with _transport(f"tagging {r}"):
            self.client.api.tag(image, r.name, r.tag)

    def remove(self, ref: ImageRef | str, *, force: bool = False) -> bool:
        """Remove a tag (or image); ``False`` if it did not exist."""
        try:
            with _transport(f"removing {ref}"):
                self.client.api.remove_image(str(ref), force=force, noprune=True)
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return False
            raise

    def pull(self, ref: ImageRef | str, credentials: Optional[RegistryCredentials] = None) -> str:
        """Pull ``ref`` (tag or digest) and return the local image id."""
        r = ImageRef.parse(str(ref))
        secrets = [credentials.secret] if credentials else []
        try:
            with _transport(f"pulling {r}"):
                for event in self.client.api.pull(
                    r.name, tag=r.digest or r.tag or "latest", stream=True, decode=True,
                    auth_config=credentials.auth_config() if credentials else None,
                ):
                    if "error" in event:
                        raise classify_registry_error(event["error"], r.registry, secrets=secrets)
        except docker.errors.APIError as exc:
            raise classify_registry_error(str(exc.explanation or exc), r.registry, secrets=secrets) from None
        image = self.local_image(r)
        if image is None:
            raise RegistryError(f"pull of {r} finished but the image is not in the daemon", r.registry)
        return image.id

    def run(
        self,
        image: str,
        command: list[str] | str | None = None,
        *,
        network: str = "none",
        timeout: Optional[float] = 300,
        environment: Optional[dict[str, str]] = None,
        entrypoint: Optional[list[str] | str] = None,
        volumes: Optional[dict[str, dict[str, str]]] = None,
    ) -> tuple[int, str]:
        """Run ``command`` in a throw-away container; return (exit code, combined output).

        The container is always removed, also on timeout (which kills it, exit code 137).
        """
        with _transport(f"creating a container of {image}"):
            container = self.client.containers.create(
                image, command, network_mode=network, environment=environment, entrypoint=entrypoint,
                volumes=volumes, detach=True,
            )
        try:
            container.start()
            try:
                status = container.wait(timeout=timeout)
                code = int(status.get("StatusCode", 1))
            except TRANSPORT_ERRORS:  # the wait timed out
                container.kill()
                code = 137
            output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
            return code, output
        finally:
            container.remove(force=True)

    # ---- registry -----------------------------------------------------------------
    def registry_digest(self, ref: ImageRef | str, credentials: Optional[RegistryCredentials] = None) -> Optional[str]:
        """The manifest digest the registry holds for ``ref``, or ``None`` if it holds none.

        Asks the daemon's distribution endpoint (``docker-py inspect_distribution``)
        with the credentials, so the check is authenticated like a push. Credentials from
        a credential helper that the registry refuses are fetched again once.
        """
        return retry_refused(lambda creds: self._registry_digest(ref, creds), credentials)

    def _registry_digest(self, ref: ImageRef | str, credentials: Optional[RegistryCredentials]) -> Optional[str]:
        r = ImageRef.parse(str(ref))
        secrets = [credentials.secret] if credentials else []
        try:
            with _transport(f"asking the registry for {r}"):
                info = self.client.api.inspect_distribution(
                    str(r), auth_config=credentials.auth_config() if credentials else None
                )
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            if AUTH_PATTERNS.search(text) and not MISSING_PATTERNS.search(text.replace("denied", "")):
                raise classify_registry_error(text, r.registry, secrets=secrets) from None
            if UNREACHABLE_PATTERNS.search(text):
                raise classify_registry_error(text, r.registry, secrets=secrets) from None
            if MISSING_PATTERNS.search(text) or exc.status_code == 404:
                return None
            raise classify_registry_error(text, r.registry, secrets=secrets) from None
        return info.get("Descriptor", {}).get("digest")

    def login(self, credentials: RegistryCredentials) -> None:
        """Check ``credentials`` against the registry (daemon-side login, nothing written to disk)."""
        try:
            with _transport(f"logging in to {credentials.registry}"):
                self.client.login(
                    username=credentials.username, password=credentials.secret, registry=credentials.registry, reauth=True
                )
        except docker.errors.APIError as exc:
            raise classify_registry_error(str(exc.explanation or exc), credentials.registry, secrets=[credentials.secret]) from None

    def cli_login(self, credentials: RegistryCredentials, *, config_dir: Optional[str] = None, timeout: float = 60) -> None:
        """``docker login --password-stdin``: stores credentials for the docker CLI.

        The secret goes through stdin, never argv, so it is not in the process list.
        """
        cmd = [docker_cli()]
        if config_dir:
            cmd += ["--config", config_dir]
        cmd += ["login", "--username", credentials.username, "--password-stdin", credentials.registry]
        try:
            proc = subprocess.run(cmd, input=credentials.secret + "\n", capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RegistryUnavailable(f"docker login to {credentials.registry} timed out after {timeout}s", credentials.registry) from None
        if proc.returncode != 0:
            err = classify_registry_error(proc.stderr.strip() or proc.stdout.strip(), credentials.registry, secrets=[credentials.secret])
            err.returncode = proc.returncode
            err.stderr = redact(proc.stderr, [credentials.secret])[-4000:]
            raise err

    def push(
        self,
        ref: ImageRef | str,
        credentials: Optional[RegistryCredentials] = None,
        stream: Optional[TextIO] = None,
        timeout: Optional[float] = None,
    ) -> str:
        """Push ``ref`` and return the manifest digest the registry stored.

        Progress (one line per layer status) goes to ``stream``. A timeout closes the
        connection, which makes the daemon abort the push. Credentials from a credential
        helper that the registry refuses are fetched again once (``retry_refused``).
        """
        return retry_refused(lambda creds: self._push(ref, creds, stream, timeout), credentials)

    def _push(
        self,
        ref: ImageRef | str,
        credentials: Optional[RegistryCredentials],
        stream: Optional[TextIO],
        timeout: Optional[float],
    ) -> str:
        r = ImageRef.parse(str(ref))
        secrets = [credentials.secret] if credentials else []
        digest: Optional[str] = None

        def timed_out() -> Exception:
            return PushTimeout(f"push of {r} timed out after {timeout}s and was aborted", r.registry)

        with self._streaming_call(timeout, timed_out, f"pushing {r}") as api:
            try:
                events = api.push(
                    r.name, tag=r.tag, stream=True, decode=True,
                    auth_config=credentials.auth_config() if credentials else None,
                )
                for event in events:
                    if "error" in event:
                        raise classify_registry_error(event["error"], r.registry, push=True, secrets=secrets)
                    if "status" in event and stream is not None:
                        line = event["status"]
                        if event.get("id"):
                            line = f"{event['id']}: {line}"
                        if event.get("progress"):
                            line += " " + event["progress"]
                        write(stream, line + "\n")
                    aux = event.get("aux") or {}
                    if aux.get("Digest"):
                        digest = aux["Digest"]
                    elif not digest:
                        # the containerd image store (Docker 24+) reports it in the status only
                        found = _PUSHED_DIGEST.search(str(event.get("status") or ""))
                        digest = found.group(1) if found else None
            except docker.errors.APIError as exc:
                raise classify_registry_error(str(exc.explanation or exc), r.registry, push=True, secrets=secrets) from None
        if not digest:
            raise PushError(f"push of {r} finished without the registry reporting a digest", r.registry)
        return digest

    # ---- build --------------------------------------------------------------------
    def build(
        self,
        plan: "BuildPlan",
        tags: Optional[list[str]] = None,
        stream: Optional[TextIO] = None,
        timeout: Optional[float] = None,
        extra: Optional[dict[str, Any]] = None,
    ) -> str:
        """Build ``plan`` and tag the result ``repository:tag`` for each of ``tags``.

        Picks BuildKit (CLI) when the plan asks for it or needs it, docker-py's
        classic builder otherwise. Returns the image id. ``extra`` passes further
        keyword arguments to docker-py's ``build`` (classic builder only).
        """
        tags = list(tags or plan.all_tags)
        refs = [f"{plan.repository}:{t}" for t in tags]
        extra = dict(extra or {})
        buildx_opts = {k: extra.pop(k) for k in list(extra) if (k in BUILDX_OPTIONS or k == CACHE_AUTH) and extra[k] is not None}
        for k in [k for k in extra if k in BUILDX_OPTIONS]:
            extra.pop(k)
        multi = bool(plan.platform and "," in plan.platform)
        if multi or buildx_opts:
            needs = f"platform={plan.platform!r}" if multi else f"option(s) {', '.join(sorted(buildx_opts))}"
            if not buildx_available():
                raise BuildxUnavailable(
                    f"{needs} need(s) BuildKit through docker buildx, which {docker_cli()} lacks; "
                    "use Docker 23+ with the buildx plugin (scripts/services.sh: FLYIMAGE_DOCKER=modern)"
                )
            if extra:
                raise ValueError(f"build options {sorted(extra)} are only supported by the docker-py backend, not with {needs}")
            with self._context_folder(plan) as context:
                return build_buildkit(self, plan, context, refs, stream, timeout, buildx_opts)
        backend = choose_backend(plan, bool(extra))
        if backend == "buildkit" and extra:
            raise ValueError(f"build options {sorted(extra)} are only supported by the docker-py backend")
        with self._context_folder(plan) as context:
            if backend == "docker-py":
                return self._build_classic(plan, context, refs, stream, timeout, extra or {})
            return build_buildkit(self, plan, context, refs, stream, timeout)

    @staticmethod
    @contextlib.contextmanager
    def _context_folder(plan: "BuildPlan") -> Iterator[Path]:
        """The folder to send: the plan's, or its generated context staged for this build."""
        generated = plan.generated_context
        if generated is None:
            yield plan.context
            return
        if generated.staged_at is not None and Path(generated.staged_at).is_dir():
            yield Path(generated.staged_at)
            return
        with tempfile.TemporaryDirectory(prefix="flyimage-ctx-") as tmp:
            generated.stage(Path(tmp))
            yield Path(tmp)

    def _build_classic(
        self, plan: "BuildPlan", context: Path, refs: list[str], stream: Optional[TextIO], timeout: Optional[float],
        extra: dict[str, Any],
    ) -> str:
        kwargs: dict[str, Any] = dict(
            pull=plan.pull, nocache=plan.no_cache, buildargs=dict(plan.build_args) or None,
            labels=plan.image_labels, target=plan.target, platform=plan.platform, network_mode=plan.network,
        )
        kwargs.update(extra)
        on_disk = context / plan.dockerfile_name if plan.dockerfile_name else None
        if on_disk is not None and on_disk.is_file() and on_disk.read_text() == plan.build_dockerfile_text:
            # The Dockerfile is in the context: name it, and the context goes as it is.
            image_id = self.build_classic(context, plan.dockerfile_name, refs[0], stream=stream, timeout=timeout, **kwargs)
        else:
            # Generated text: docker-py would ship it as ".dockerfile.<random>" and rewrite
            # .dockerignore to name it, so every build (and `COPY .` layer) would differ.
            # Archive the context ourselves with a fixed name instead: same plan, same bytes.
            archive = build_utils.tar(
                str(context), exclude=read_dockerignore(context), dockerfile=(GENERATED_DOCKERFILE, plan.build_dockerfile_text),
            )
            try:
                image_id = self.build_classic(
                    context, GENERATED_DOCKERFILE, refs[0], stream=stream, timeout=timeout,
                    fileobj=archive, custom_context=True, **kwargs,
                )
            finally:
                archive.close()
        # The daemon tags only the first reference; the others point at the same id.
        for ref in refs[1:]:
            self.tag(image_id, ref)
        return image_id

    def build_classic(
        self,
        context: Path | str,
        dockerfile: str = "Dockerfile",
        tag: Optional[str] = None,
        *,
        stream: Optional[TextIO] = None,
        timeout: Optional[float] = None,
        **kwargs: Any,
    ) -> str:
        """Build with docker-py's classic builder (works with any DOCKER_HOST); return the image id.

        ``dockerfile`` is relative to ``context`` or absolute (docker-py then ships it
        inside the context archive). Build output streams to ``stream`` as it comes.
        """
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        step: Optional[str] = None
        image_id: Optional[str] = None
        what = tag or str(context)
        kwargs = {k: v for k, v in kwargs.items() if k != "decode"}
        if not kwargs.get("network_mode"):
            kwargs["network_mode"] = self.default_build_network()
        kwargs.setdefault("rm", True)
        kwargs.setdefault("forcerm", True)  # no stopped containers left behind by a failed step

        def timed_out() -> Exception:
            return BuildTimeout(f"build of {what} timed out after {timeout}s and was cancelled", step=step, output="\n".join(tail))

        with self._streaming_call(timeout, timed_out, f"building {what}") as api:
            try:
                source = {} if kwargs.get("custom_context") else {"path": str(context)}
                for event in api.build(dockerfile=dockerfile, tag=tag, decode=True, **source, **kwargs):
                    if "stream" in event:
                        text = event["stream"]
                        write(stream, text)
                        for line in text.splitlines():
                            if STEP.match(line.strip()):
                                step = line.strip()
                            if line.strip():
                                tail.append(line.rstrip())
                    elif "aux" in event and isinstance(event["aux"], dict) and "ID" in event["aux"]:
                        image_id = event["aux"]["ID"]
                    elif "error" in event or "message" in event:
                        message = event.get("error") or event.get("message")
                        raise BuildError(
                            f"build of {what} failed at {step or 'an unknown step'}: {message}",
                            step=step, output="\n".join(tail),
                        )
            except docker.errors.APIError as exc:
                raise BuildError(f"build of {what} failed: {exc.explanation or exc}", step=step, output="\n".join(tail)) from None
            except docker.errors.DockerException as exc:
                if "Credentials store error" not in str(exc):
                    raise
                # docker-py sends the classic builder every registry's credentials, so a
                # missing or failing helper stops even a build that pulls nothing private.
                raise AuthenticationError(
                    f"build of {what}: the classic builder needs every registry's credentials from the docker "
                    f"config, and a credential helper failed: {exc}"
                ) from None
        if not image_id:
            raise BuildError(f"build of {what} finished without an image id", step=step, output="\n".join(tail))
        return image_id
