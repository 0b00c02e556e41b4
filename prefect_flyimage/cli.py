"""The ``prefect-flyimage`` command.

Exit codes tell scripts what went wrong:

====  ==========================================================
0     success
1     the build or push itself failed (a Dockerfile step, a push)
2     bad input (missing context, bad reference, invalid spec)
3     authentication refused by the registry
4     infrastructure unavailable (Docker daemon, registry)
====  ==========================================================
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from .credentials import RegistryCredentials
from .errors import (
    AuthenticationError,
    ContextError,
    DockerUnavailable,
    FlyImageError,
    InvalidReferenceError,
    RegistryUnavailable,
    SpecError,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_INFRA = 0, 1, 2, 3, 4

app = typer.Typer(
    name="prefect-flyimage",
    help="Build, cache and publish container images for Prefect deployments; rebuild only what changed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
fly_app = typer.Typer(help="Fly.io registry (registry.fly.io/<app>:<tag>).", no_args_is_help=True)
app.add_typer(fly_app, name="fly")


def exit_code_for(exc: BaseException) -> int:
    """Map an exception to the documented exit code."""
    if isinstance(exc, AuthenticationError):
        return EXIT_AUTH
    if isinstance(exc, (DockerUnavailable, RegistryUnavailable)):
        return EXIT_INFRA
    if isinstance(exc, (ContextError, InvalidReferenceError, SpecError, ValueError, FileNotFoundError)):
        return EXIT_USAGE
    return EXIT_FAILED


def _run(fn: Callable[[], Any], as_json: bool) -> None:
    try:
        value = fn()
    except (FlyImageError, ValueError, FileNotFoundError) as exc:
        code = exit_code_for(exc)
        if as_json:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc), "exit_code": code}))
        else:
            typer.secho(f"error ({type(exc).__name__}): {exc}", err=True, fg="red")
            output = getattr(exc, "output", None)
            if output:
                typer.echo(output, err=True)
        raise typer.Exit(code) from None
    if as_json:
        print(json.dumps(value, indent=2, default=str))
    elif isinstance(value, dict):
        for key, item in value.items():
            typer.echo(f"{key}: {item}")
    elif value is not None:
        typer.echo(value)


def _credentials(registry: Optional[str], username: Optional[str], password_stdin: bool) -> Optional[RegistryCredentials]:
    username = username or os.environ.get("PREFECT_FLYIMAGE_REGISTRY_USERNAME")
    password = sys.stdin.readline().rstrip("\n") if password_stdin else os.environ.get("PREFECT_FLYIMAGE_REGISTRY_PASSWORD")
    if not username or not password or not registry:
        return None  # fall back to the docker config's credentials
    return RegistryCredentials(registry, username, password)


def _plan(path: Path, repository: str, dockerfile: str, tag: Optional[str], build_arg: list[str], platform: Optional[str],
          target: Optional[str], network: Optional[str], backend: str):
    from .dockerfile import default_dockerfile_text
    from .plan import BuildPlan

    args = {}
    for item in build_arg:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--build-arg {item!r} must look like KEY=VALUE")
        args[key] = value
    common = dict(tag=tag, platform=platform, target=target, network=network, backend=backend)
    if dockerfile == "auto":
        if (path / "Dockerfile").exists():
            raise ContextError(
                f"{path / 'Dockerfile'} exists but --dockerfile auto was asked for; pass --dockerfile Dockerfile "
                "to use it, or remove it", path / "Dockerfile",
            )
        return BuildPlan(context=path, dockerfile_text=default_dockerfile_text(path), repository=repository,
                         build_args=tuple(args.items()), **common)
    return BuildPlan.from_dockerfile(path, repository, dockerfile=dockerfile, build_args=args, **common)


PathArg = typer.Argument(Path("."), help="build context folder", show_default=True)
RepoOpt = typer.Option(..., "--repository", "-r", help="image name without tag, e.g. 127.0.0.1:5000/team/app")
DockerfileOpt = typer.Option("Dockerfile", "--dockerfile", "-f", help="Dockerfile path in the context, or 'auto' for Prefect's default")
TagOpt = typer.Option(None, "--tag", "-t", help="explicit tag (the content tag is pushed too); default: content hash")
ArgOpt = typer.Option([], "--build-arg", help="KEY=VALUE, repeatable")
PlatformOpt = typer.Option(None, "--platform", help="e.g. linux/amd64")
TargetOpt = typer.Option(None, "--target", help="multi-stage target")
NetworkOpt = typer.Option(None, "--network", help="build-time network, e.g. host")
BackendOpt = typer.Option("auto", "--backend", help="auto, docker-py or buildkit")
JsonOpt = typer.Option(False, "--json", help="print one JSON object (for scripts)")
UserOpt = typer.Option(None, "--username", "-u", help="registry user (or $PREFECT_FLYIMAGE_REGISTRY_USERNAME)")
PassOpt = typer.Option(False, "--password-stdin", help="read the registry password from stdin (or $PREFECT_FLYIMAGE_REGISTRY_PASSWORD)")
QuietOpt = typer.Option(False, "--quiet", "-q", help="no build or push progress")


def _ensure(push: bool, path: Path, repository: str, dockerfile: str, tag: Optional[str], build_arg: list[str],
            platform: Optional[str], target: Optional[str], network: Optional[str], backend: str, force: bool,
            username: Optional[str], password_stdin: bool, as_json: bool, quiet: bool) -> None:
    from .names import ImageRef
    from .pipeline import ensure
    from .progress import progress_stream

    def go() -> dict[str, Any]:
        plan = _plan(path, repository, dockerfile, tag, build_arg, platform, target, network, backend)
        creds = _credentials(ImageRef.parse(repository).registry, username, password_stdin) if push else None
        stream, live = progress_stream(not quiet and not as_json)
        if live is not None:
            with live:
                result = ensure(plan, push=push, force=force, credentials=creds, stream_progress_to=stream)
        else:
            result = ensure(plan, push=push, force=force, credentials=creds, stream_progress_to=stream)
        return result.as_dict() if as_json else {
            "reference": result.reference, "digest": result.digest, "built": result.built,
            "pushed": result.pushed, "cached": result.cached,
        }

    _run(go, as_json)


@app.command(epilog="Example: prefect-flyimage build . -r 127.0.0.1:5000/team/app")
def build(path: Path = PathArg, repository: str = RepoOpt, dockerfile: str = DockerfileOpt, tag: Optional[str] = TagOpt,
          build_arg: list[str] = ArgOpt, platform: Optional[str] = PlatformOpt, target: Optional[str] = TargetOpt,
          network: Optional[str] = NetworkOpt, backend: str = BackendOpt,
          force: bool = typer.Option(False, "--force", help="rebuild even if the image exists"),
          as_json: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """Build the image for PATH unless the daemon already has it (content-hash tag)."""
    _ensure(False, path, repository, dockerfile, tag, build_arg, platform, target, network, backend, force, None, False, as_json, quiet)


@app.command(epilog="Example: prefect-flyimage ensure flows/example -r 127.0.0.1:5000/team/app -f auto -u flyimage --password-stdin")
def ensure(path: Path = PathArg, repository: str = RepoOpt, dockerfile: str = DockerfileOpt, tag: Optional[str] = TagOpt,
           build_arg: list[str] = ArgOpt, platform: Optional[str] = PlatformOpt, target: Optional[str] = TargetOpt,
           network: Optional[str] = NetworkOpt, backend: str = BackendOpt,
           force: bool = typer.Option(False, "--force", help="rebuild and re-push even if the registry has it"),
           username: Optional[str] = UserOpt, password_stdin: bool = PassOpt, as_json: bool = JsonOpt,
           quiet: bool = QuietOpt) -> None:
    """Build if missing, push if the registry lacks it; print the reference and digest."""
    _ensure(True, path, repository, dockerfile, tag, build_arg, platform, target, network, backend, force, username, password_stdin, as_json, quiet)


@app.command(epilog="Example: prefect-flyimage push 127.0.0.1:5000/team/app:v1 -u flyimage --password-stdin")
def push(reference: str = typer.Argument(..., help="local image reference to push"), username: Optional[str] = UserOpt,
         password_stdin: bool = PassOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """Push a local image; print its digest."""
    from .engine import Engine
    from .names import ImageRef
    from .progress import progress_stream

    def go() -> dict[str, Any]:
        ref = ImageRef.parse(reference)
        creds = _credentials(ref.registry, username, password_stdin)
        stream, live = progress_stream(not quiet and not as_json)
        if live is not None:
            with live:
                digest = Engine().push(ref, creds, stream)
        else:
            digest = Engine().push(ref, creds, stream)
        return {"reference": str(ref), "digest": digest, "pinned": f"{ref.name}@{digest}"}

    _run(go, as_json)


@app.command(epilog="Example: prefect-flyimage dockerfile flows/example -f auto   |   prefect-flyimage dockerfile --spec images.py:app")
def dockerfile(path: Path = PathArg, dockerfile: str = DockerfileOpt,
               spec: Optional[str] = typer.Option(None, "--spec", help="FILE.py:NAME or module:NAME of an Image spec")) -> None:
    """Print the Dockerfile a project (or an Image spec) renders to."""
    def go() -> str:
        if spec:
            image = _load_spec(spec)
            return image.dockerfile_text() if callable(getattr(image, "dockerfile_text", None)) else str(image.render())
        if dockerfile == "auto":
            from .dockerfile import default_dockerfile_text

            return default_dockerfile_text(path).rstrip("\n")
        full = Path(dockerfile) if Path(dockerfile).is_absolute() else path / dockerfile
        if not full.is_file():
            raise ContextError(f"Dockerfile {str(full)!r} not found", full)
        return full.read_text().rstrip("\n")

    _run(go, False)


def _load_spec(spec: str) -> Any:
    import importlib
    import runpy

    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ValueError(f"--spec {spec!r} must be FILE.py:NAME or module:NAME")
    if target.endswith(".py"):
        namespace = runpy.run_path(target)
        if attr not in namespace:
            raise ValueError(f"{target} defines no {attr!r}")
        return namespace[attr]
    return getattr(importlib.import_module(target), attr)


@app.command(epilog="Example: prefect-flyimage inspect . -r 127.0.0.1:5000/team/app --why")
def inspect(path: Path = PathArg, repository: str = RepoOpt, dockerfile: str = DockerfileOpt, tag: Optional[str] = TagOpt,
            build_arg: list[str] = ArgOpt, platform: Optional[str] = PlatformOpt, target: Optional[str] = TargetOpt,
            remote: bool = typer.Option(True, "--remote/--local", help="also ask the registry"),
            why: bool = typer.Option(False, "--why", help="say what changed against the image the registry holds "
                                     "(files, Dockerfile, build args, platform), from the inputs label it carries"),
            against: Optional[str] = typer.Option(None, "--against", help="with --why: compare with this tag "
                                                  "(default: the explicit tag, else the newest labelled image)"),
            username: Optional[str] = UserOpt, password_stdin: bool = PassOpt, as_json: bool = JsonOpt) -> None:
    """Show what the plan hash covers and whether the image exists locally and in the registry."""
    from .names import ImageRef
    from .pipeline import exists

    def go() -> Any:
        plan = _plan(path, repository, dockerfile, tag, build_arg, platform, target, None, "auto")
        creds = _credentials(ImageRef.parse(repository).registry, username, password_stdin)
        state = exists(plan, creds, remote=remote)
        info = {**plan.describe(), "reference": str(plan.ref), "local_image_id": state.local_id,
                "registry_digest": state.remote_digest}
        if not why:
            return info
        from .inputs import explain

        result = explain(plan, creds, against)
        changes = result["changes"]
        if as_json:
            return {**info, "why": {**result, "changes": changes.as_dict() if changes is not None else None}}
        lines = [f"{key}: {info[key]}" for key in ("reference", "hash", "registry_digest")]
        if result["status"] == "unchanged":
            lines.append(f"why: nothing to rebuild: the registry holds this plan's image as {result['compared_with']}")
        elif result["status"] == "no-previous-image":
            lines.append(f"why: first image: the registry holds no image of {plan.repository}")
        elif result["status"] == "no-inputs-label":
            lines.append(f"why: cannot tell: {result['compared_with']} carries no inputs label "
                         "(built before prefect-flyimage recorded them, or by another tool)")
        else:
            lines.append(f"why: compared with {result['compared_with']} (created {result['created']}):")
            lines += [f"  {line}" for line in changes.lines()] or ["  no input differs (same inputs, other labels)"]
            if changes.grouped:
                lines.append("  (a large context: compared folder by folder)")
        return "\n".join(lines)

    _run(go, as_json)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             epilog="Example: prefect-flyimage chain -c config.yaml build images/ --select '*python*'")
def chain(ctx: typer.Context) -> None:
    """docker-pkg compatible image trees: takes docker-pkg's arguments (build, publish, update, prune)."""
    from .chain.cli import main as chain_main

    raise typer.Exit(chain_main(list(ctx.args)))


@fly_app.command("ensure", epilog="Example: FLY_API_TOKEN=... prefect-flyimage fly ensure my-app --context .")
def fly_ensure(app_name: str = typer.Argument(..., help="Fly.io app name"),
               tag: str = typer.Option("latest", "--tag", "-t"),
               context: Optional[Path] = typer.Option(None, "--context", help="docker build context (default: cwd)"),
               token_stdin: bool = typer.Option(False, "--token-stdin", help="read the Fly API token from stdin (else $FLY_API_TOKEN)"),
               as_json: bool = JsonOpt) -> None:
    """Build and push registry.fly.io/APP:TAG unless the registry already holds this context's image."""
    from . import fly

    def go() -> Any:
        token = sys.stdin.readline().strip() if token_stdin else None
        ref = fly.ensure_image_sync(app_name, tag=tag, token=token, docker_context=context)
        return {"reference": ref} if as_json else ref

    _run(go, as_json)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``prefect-flyimage`` script; returns the exit code."""
    try:
        rv = app(args=argv, standalone_mode=False)
        return rv if isinstance(rv, int) else EXIT_OK
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:  # click's usage errors
        return int(exc.code or 0)
    except Exception as exc:  # click.UsageError and friends
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    raise SystemExit(main())
