"""BuildKit builds through the docker CLI: ``docker buildx build --load`` (Docker 23+),
or an old CLI's built-in BuildKit (``DOCKER_BUILDKIT=1 docker build``).

docker-py only speaks to the classic builder, so cache and secret mounts, heredocs and
several platforms go through the CLI here. :func:`choose_backend` is the one place that
picks the builder of a single-platform build.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TextIO

from .._dockerignore import buildkit_ignore, case_gap
from ..context import read_dockerignore
from ..errors import BaseImageDenied, BuildError, BuildTimeout, DockerUnavailable
from ._base_access import denied_base
from ._buildx import buildx_auth_env, buildx_flags, cache_refused, load_output
from ._process import buildkit_available, buildx_available, docker_cli, run_streaming, write

if TYPE_CHECKING:
    from ..plan import BuildPlan
    from ._engine import Engine

__all__ = ["STEP", "build_buildkit", "buildkit_command", "choose_backend", "context_ignore", "provenance"]

#: A build step's header line: the classic builder's ``Step 2/5 : ...``, BuildKit's ``#7 [2/5] ...``.
STEP = re.compile(r"^(Step \d+/\d+ : .*|#\d+ \[[^\]]+\] .*)$")


def choose_backend(plan: "BuildPlan", docker_py_options: bool = False) -> str:
    """The builder a single-platform build of ``plan`` uses here: ``"buildkit"`` or ``"docker-py"``.

    BuildKit wherever ``docker buildx`` works (no intermediate containers, incremental
    context transfer); the classic builder where it does not, unless the Dockerfile
    needs BuildKit. PREFECT_FLYIMAGE_BUILD_BACKEND=buildkit also takes an old CLI's
    built-in BuildKit; =docker-py keeps the classic builder, as do docker-py-only
    options. The append path asks too: its config must be what this build would write.
    """
    if plan.backend != "auto":
        return plan.backend
    prefer = os.environ.get("PREFECT_FLYIMAGE_BUILD_BACKEND", "auto")
    if plan.needs_buildkit():
        return "buildkit"
    if docker_py_options or prefer == "docker-py":
        return "docker-py"
    if prefer == "buildkit":
        return "buildkit" if buildkit_available() else "docker-py"
    return "buildkit" if buildx_available() else "docker-py"


def provenance() -> str:
    """``PREFECT_FLYIMAGE_PROVENANCE``: buildx's ``--provenance`` value (``false`` unless set)."""
    return os.environ.get("PREFECT_FLYIMAGE_PROVENANCE", "").strip() or "false"


def context_ignore(context: Path, dockerfile: Optional[str]) -> Optional[str]:
    """The ``<dockerfile>.dockerignore`` text that makes BuildKit send the entries we hash,
    or ``None`` when its case-sensitive matcher already agrees with docker-py's.

    No pattern with a cased letter: both matchers agree (bar a case twin of the
    Dockerfile itself), so the tree is not walked again.
    """
    patterns = read_dockerignore(context)
    if all(p.lower() == p.upper() for p in patterns):
        return None
    hashed, sent = case_gap(str(context), patterns, dockerfile)
    return buildkit_ignore(str(context), patterns, hashed, sent)


def buildkit_command(
    plan: "BuildPlan", context: Path, refs: list[str], dockerfile: Path, iidfile: Path, secrets_dir: Path,
    network: Optional[str], buildx_opts: Optional[dict[str, Any]] = None,
) -> list[str]:
    """The docker CLI command that builds ``plan``. Secrets given as environment
    variables are copied to private files in ``secrets_dir``: no value reaches argv."""
    # No provenance attestation for one platform by default: with the containerd
    # image store it turns each image into an index whose attestation a pull by
    # digest does not fetch, so pushing further tags of a pulled image fails
    # ("missing content"), and its timestamp makes each build a new image. Several
    # platforms keep buildx's default: Docker 26 pushes such an index whole only then.
    multi = bool(plan.platform and "," in plan.platform)
    attest = [] if multi and not os.environ.get("PREFECT_FLYIMAGE_PROVENANCE") else [f"--provenance={provenance()}"]
    build = ["buildx", "build", *load_output(), *attest] if buildx_available() else ["build"]
    cmd = [docker_cli(), *build, "--progress=plain", "-f", str(dockerfile), "--iidfile", str(iidfile)]
    for ref in refs:
        cmd += ["-t", ref]
    for key, value in plan.build_args:
        cmd += ["--build-arg", f"{key}={value}"]
    for key, value in plan.image_labels.items():
        cmd += ["--label", f"{key}={value}"]
    if plan.target:
        cmd += ["--target", plan.target]
    if plan.platform:
        cmd += ["--platform", plan.platform]
    if network:
        cmd += ["--network", network]
    if plan.pull:
        cmd.append("--pull")
    if plan.no_cache:
        cmd.append("--no-cache")
    for secret in plan.secrets:
        if secret.src:
            cmd += ["--secret", f"id={secret.id},src={secret.src}"]
        else:
            # Copy the value to a private file: the 20.10 CLI has no env= source.
            path = secrets_dir / f"secret-{len(cmd)}"
            path.touch(mode=0o600)
            path.write_text(os.environ.get(secret.env or "", ""))
            cmd += ["--secret", f"id={secret.id},src={path}"]
    cmd += buildx_flags(buildx_opts or {})
    cmd.append(str(context))
    return cmd


def build_buildkit(
    engine: "Engine", plan: "BuildPlan", context: Path, refs: list[str], stream: Optional[TextIO],
    timeout: Optional[float], buildx_opts: Optional[dict[str, Any]] = None,
) -> str:
    """Build ``plan`` from ``context`` with BuildKit, tagged as each of ``refs``; return the image id."""
    with tempfile.TemporaryDirectory(prefix="flyimage-bk-") as tmp:
        # BuildKit reads the Dockerfile apart from the context, so a temp file is harmless.
        dockerfile = Path(tmp) / "Dockerfile"
        dockerfile.write_text(plan.build_dockerfile_text)
        # BuildKit reads this instead of the context's .dockerignore (moby's matcher is
        # case-sensitive; the hash follows docker-py's, which is not).
        ignore = context_ignore(context, plan.dockerfile_name)
        if ignore is not None:
            (Path(tmp) / "Dockerfile.dockerignore").write_text(ignore)
        iidfile = Path(tmp) / "iid"
        network = plan.network or engine.default_build_network()
        cmd = buildkit_command(plan, context, refs, dockerfile, iidfile, Path(tmp), network, buildx_opts)
        env = {**os.environ, "DOCKER_BUILDKIT": "1", **buildx_auth_env(buildx_opts or {}, Path(tmp))}
        code, tail, step, timed_out = run_streaming(cmd, env=env, stream=stream, timeout=timeout, step_pattern=STEP)
        if timed_out:
            raise BuildTimeout(
                f"build of {refs[0]} timed out after {timeout}s and was killed", step=step,
                output="\n".join(tail), returncode=code,
            )
        if code != 0:
            message = next((l for l in reversed(tail) if "ERROR" in l or "error" in l), tail[-1] if tail else "")
            if "buildx component is missing" in "\n".join(tail):
                raise DockerUnavailable(
                    f"{cmd[0]} cannot run BuildKit builds without buildx; install Debian's docker.io "
                    "or set PREFECT_FLYIMAGE_DOCKER_CLI"
                )
            denial = denied_base(tail)  # BuildKit words a registry's refusal of a base vaguely
            if denial is not None:
                raise BaseImageDenied(
                    f"build of {refs[0]} failed at {denial.step}: access to base image {denial.base} denied: "
                    f"{denial.error}", denial.error.registry, step=denial.step, output="\n".join(tail), returncode=code,
                ) from None
            raise BuildError(
                f"build of {refs[0]} failed at {step or 'an unknown step'}: {message}", step=step,
                output="\n".join(tail), returncode=code,
            )
        refused = cache_refused(tail) if (buildx_opts or {}).get("cache_to") else None
        if refused:
            note = f"registry cache not {'imported' if 'importer' in refused else 'exported'} (the build went on without it): {refused}"
            logging.getLogger("prefect_flyimage").warning("%s", note)
            write(stream, note + "\n")
        iid = iidfile.read_text().strip()
        # buildx's iidfile names the config, while the containerd image store's id is
        # the manifest's (or index's): ask the daemon what the tag names
        local = engine.local_image(refs[0]) if buildx_available() else None
        return local.id if local is not None else iid
