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

import contextlib
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
    # Without a command: "Missing command." with the usage line on stderr and exit 2
    # (no_args_is_help would print the help to stdout, from where scripts do not see a mistake).
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)
fly_app = typer.Typer(help="Fly.io registry (registry.fly.io/<app>:<tag>).", no_args_is_help=False)
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


def _show_usage() -> None:
    """The command's usage line and help hint on stderr, as click prints them for usage errors."""
    ctx = _current_context()
    if ctx is not None:
        typer.echo(f"{ctx.get_usage()}\nTry '{ctx.command_path} --help' for help.\n", err=True)


def _current_context() -> Any:
    try:  # typer >= 0.22 bundles its own click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - older typer on click
        from click import get_current_context
    return get_current_context(silent=True)


def _run(fn: Callable[[], Any], as_json: bool) -> None:
    try:
        value = fn()
    except (FlyImageError, ValueError, FileNotFoundError) as exc:
        code = exit_code_for(exc)
        if as_json:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc), "exit_code": code}))
        else:
            if code == EXIT_USAGE:
                _show_usage()
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
          target: Optional[str], network: Optional[str], backend: str, pull: bool = False):
    from .dockerfile import default_dockerfile_text
    from .plan import BuildPlan

    args = {}
    for item in build_arg:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--build-arg {item!r} must look like KEY=VALUE")
        args[key] = value
    # --pull: bases are inputs, resolved in their registries (issue 16); else built by tag as before.
    common = dict(tag=tag, platform=platform, target=target, network=network, backend=backend, pull=pull, pin_bases=pull)
    if dockerfile == "auto":
        if (path / "Dockerfile").exists():
            raise ContextError(
                f"{path / 'Dockerfile'} exists but --dockerfile auto was asked for; pass --dockerfile Dockerfile "
                "to use it, or remove it", path / "Dockerfile",
            )
        return BuildPlan(context=path, dockerfile_text=default_dockerfile_text(path), repository=repository,
                         build_args=tuple(args.items()), **common)
    return BuildPlan.from_dockerfile(path, repository, dockerfile=dockerfile, build_args=args, **common)


def _checked(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A typer callback turning ``check``'s ValueError into a usage error naming the option."""
    def callback(value: Any) -> Any:
        if value is None:
            return value
        try:
            for item in value if isinstance(value, list) else [value]:
                check(item)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        return value

    return callback


def _check_build_arg(item: str) -> None:
    key, sep, _ = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{item!r} must look like KEY=VALUE")


def _check_backend(value: str) -> None:
    from .plan import BACKENDS

    if value not in BACKENDS:
        raise ValueError(f"{value!r} is not one of {', '.join(BACKENDS)}")


def _check_nonempty(value: str) -> None:
    if not value.strip():
        raise ValueError("must not be empty")


def _check_repository(value: str) -> None:
    from .names import validate_repository

    validate_repository(value)


def _check_tag(value: str) -> None:
    from .names import validate_tag

    validate_tag(value)


def _check_reference(value: str) -> None:
    from .names import ImageRef

    ImageRef.parse(value)


def _check_platform(value: str) -> None:
    from .names import validate_platform

    validate_platform(value)


PathArg = typer.Argument(Path("."), help="build context folder", show_default=True, exists=True, file_okay=False,
                         dir_okay=True)
RepoOpt = typer.Option(..., "--repository", "-r", help="image name without tag, e.g. 127.0.0.1:5000/team/app",
                       callback=_checked(_check_repository))
DockerfileOpt = typer.Option("Dockerfile", "--dockerfile", "-f", help="Dockerfile path in the context, or 'auto' for Prefect's default",
                             callback=_checked(_check_nonempty))
TagOpt = typer.Option(None, "--tag", "-t", help="explicit tag (the content tag is pushed too); default: content hash",
                      callback=_checked(_check_tag))
ArgOpt = typer.Option([], "--build-arg", help="KEY=VALUE, repeatable", callback=_checked(_check_build_arg))
PlatformOpt = typer.Option(None, "--platform", help="e.g. linux/amd64", callback=_checked(_check_platform))
TargetOpt = typer.Option(None, "--target", help="multi-stage target", callback=_checked(_check_nonempty))
NetworkOpt = typer.Option(None, "--network", help="build-time network, e.g. host", callback=_checked(_check_nonempty))
BackendOpt = typer.Option("auto", "--backend", help="auto, docker-py or buildkit", callback=_checked(_check_backend))
JsonOpt = typer.Option(False, "--json", help="print one JSON object (for scripts)")
UserOpt = typer.Option(None, "--username", "-u", help="registry user (or $PREFECT_FLYIMAGE_REGISTRY_USERNAME)")
PassOpt = typer.Option(False, "--password-stdin", help="read the registry password from stdin (or $PREFECT_FLYIMAGE_REGISTRY_PASSWORD)")
QuietOpt = typer.Option(False, "--quiet", "-q", help="no build or push progress")
MirrorOpt = typer.Option([], "--mirror", help="another repository (host/path) to copy the pushed image to, "
                         "registry to registry (credentials: the docker config's); repeatable",
                         callback=_checked(_check_repository))
PullOpt = typer.Option(False, "--pull", help="resolve each base image (FROM) in its registry: its digest enters the "
                       "content tag and the build uses exactly it (a moved base rebuilds)")


def _ensure(push: bool, path: Path, repository: str, dockerfile: str, tag: Optional[str], build_arg: list[str],
            platform: Optional[str], target: Optional[str], network: Optional[str], backend: str, force: bool,
            username: Optional[str], password_stdin: bool, as_json: bool, quiet: bool, pull: bool = False,
            mirror: Optional[list[str]] = None) -> None:
    from .names import ImageRef
    from .pipeline import ensure
    from .progress import progress_stream

    def go() -> dict[str, Any]:
        plan = _plan(path, repository, dockerfile, tag, build_arg, platform, target, network, backend, pull)
        creds = _credentials(ImageRef.parse(repository).registry, username, password_stdin) if push else None
        stream, live = progress_stream(not quiet and not as_json)
        if live is not None:
            with live:
                result = ensure(plan, push=push, force=force, credentials=creds, stream_progress_to=stream, mirrors=mirror)
        else:
            result = ensure(plan, push=push, force=force, credentials=creds, stream_progress_to=stream, mirrors=mirror)
        return result.as_dict() if as_json else {
            "reference": result.reference, "digest": result.digest, "built": result.built,
            "pushed": result.pushed, "cached": result.cached, **({"mirrors": list(result.mirrors)} if mirror else {}),
        }

    _run(go, as_json)


@app.command(epilog="Example: prefect-flyimage build . -r 127.0.0.1:5000/team/app")
def build(path: Path = PathArg, repository: str = RepoOpt, dockerfile: str = DockerfileOpt, tag: Optional[str] = TagOpt,
          build_arg: list[str] = ArgOpt, platform: Optional[str] = PlatformOpt, target: Optional[str] = TargetOpt,
          network: Optional[str] = NetworkOpt, backend: str = BackendOpt,
          force: bool = typer.Option(False, "--force", help="rebuild even if the image exists"),
          as_json: bool = JsonOpt, quiet: bool = QuietOpt, pull: bool = PullOpt) -> None:
    """Build the image for PATH unless the daemon already has it (content-hash tag)."""
    _ensure(False, path, repository, dockerfile, tag, build_arg, platform, target, network, backend, force, None, False, as_json, quiet, pull)


@app.command(epilog="Example: prefect-flyimage ensure flows/example -r 127.0.0.1:5000/team/app -f auto -u flyimage --password-stdin")
def ensure(path: Path = PathArg, repository: str = RepoOpt, dockerfile: str = DockerfileOpt, tag: Optional[str] = TagOpt,
           build_arg: list[str] = ArgOpt, platform: Optional[str] = PlatformOpt, target: Optional[str] = TargetOpt,
           network: Optional[str] = NetworkOpt, backend: str = BackendOpt,
           force: bool = typer.Option(False, "--force", help="rebuild and re-push even if the registry has it"),
           username: Optional[str] = UserOpt, password_stdin: bool = PassOpt, as_json: bool = JsonOpt,
           quiet: bool = QuietOpt, pull: bool = PullOpt, mirror: list[str] = MirrorOpt) -> None:
    """Build if missing, push if the registry lacks it; print the reference and digest."""
    _ensure(True, path, repository, dockerfile, tag, build_arg, platform, target, network, backend, force, username, password_stdin,
            as_json, quiet, pull, mirror)


@app.command(epilog="Example: prefect-flyimage push 127.0.0.1:5000/team/app:v1 -u flyimage --password-stdin")
def push(reference: str = typer.Argument(..., help="local image reference to push", callback=_checked(_check_reference)), username: Optional[str] = UserOpt,
         password_stdin: bool = PassOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """Push a local image; print its digest."""
    from .names import ImageRef
    from .pipeline import push_local
    from .progress import progress_stream

    def go() -> dict[str, Any]:
        ref = ImageRef.parse(reference)
        creds = _credentials(ref.registry, username, password_stdin)
        stream, live = progress_stream(not quiet and not as_json)
        with live if live is not None else contextlib.nullcontext():
            digest = push_local(ref.name, [ref.tag or "latest"], creds, force=True, stream_progress_to=stream).digest
        return {"reference": str(ref), "digest": digest, "pinned": f"{ref.name}@{digest}"}

    _run(go, as_json)


@app.command(epilog="Example: prefect-flyimage dockerfile flows/example -f auto   |   prefect-flyimage dockerfile --spec images.py:app")
def dockerfile(path: Path = PathArg, dockerfile: str = DockerfileOpt,
               spec: Optional[str] = typer.Option(None, "--spec", help="FILE.py:NAME or module:NAME of an Image spec")) -> None:
    """Print the Dockerfile a project (or an Image spec) renders to."""
    def go() -> str:
        if spec:
            return _load_spec(spec).dockerfile_text()
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

    from .spec import Image

    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ValueError(f"--spec {spec!r} must be FILE.py:NAME or module:NAME")
    try:
        if target.endswith(".py"):
            namespace = runpy.run_path(target)
        else:
            namespace = vars(importlib.import_module(target))
    except (FileNotFoundError, ImportError) as exc:
        raise ValueError(f"--spec {spec!r}: cannot load {target}: {exc}") from None
    except SyntaxError as exc:
        raise SpecError([f"--spec {spec!r}: {exc.filename} line {exc.lineno}: {exc.msg}"]) from None
    except Exception as exc:  # the user's module failed while loading: report it, no traceback
        raise SpecError([f"--spec {spec!r}: loading {target} raised {type(exc).__name__}: {exc}"]) from None
    if attr not in namespace:
        raise ValueError(f"--spec {spec!r}: {target} defines no {attr!r}")
    image = namespace[attr]
    if not isinstance(image, Image):
        raise SpecError([f"--spec {spec!r}: {attr} is a {type(image).__name__}, not a prefect_flyimage Image"])
    return image


def _path_info(plan: Any) -> dict[str, Any]:
    """Which path a push of ``plan`` takes: the code appended in the registry, or a build (and why)."""
    from ._append_path import path_of

    path, split = path_of(plan)
    if path == "append":
        assert split.dependency is not None
        return {"path": "append", "path_reason": "code steps after the last RUN are appended in the registry to "
                f"the dependency image {split.dependency.content_ref}", "dependency_tag": split.dependency.content_tag}
    return {"path": "build", "path_reason": f"does not split: {split.reason}", "dependency_tag": None}


@app.command(epilog="Example: prefect-flyimage inspect . -r 127.0.0.1:5000/team/app --why   |   "
             "prefect-flyimage inspect --spec images.py:app")
def inspect(path: Path = PathArg,
            repository: Optional[str] = typer.Option(None, "--repository", "-r", help="image name without tag, e.g. "
                                                     "127.0.0.1:5000/team/app (required unless --spec)",
                                                     callback=_checked(_check_repository)),
            dockerfile: str = DockerfileOpt, tag: Optional[str] = TagOpt,
            build_arg: list[str] = ArgOpt, platform: Optional[str] = PlatformOpt, target: Optional[str] = TargetOpt,
            remote: bool = typer.Option(True, "--remote/--local", help="also ask the registry"),
            why: bool = typer.Option(False, "--why", help="say what changed against the image the registry holds "
                                     "(files, Dockerfile, build args, platform), from the inputs label it carries"),
            against: Optional[str] = typer.Option(None, "--against", help="with --why: compare with this tag "
                                                  "(default: the explicit tag, else the newest labelled image)"),
            username: Optional[str] = UserOpt, password_stdin: bool = PassOpt, as_json: bool = JsonOpt,
            pull: bool = PullOpt,
            spec: Optional[str] = typer.Option(None, "--spec", help="FILE.py:NAME or module:NAME of an Image spec: "
                                               "inspect its plan (and its path: append or build) instead of PATH's; "
                                               "-f, -t, --build-arg, --platform, --target, --pull are then the spec's")) -> None:
    """Show what the plan hash covers and whether the image exists locally and in the registry."""
    from .names import ImageRef
    from .pipeline import exists

    if (spec is None) == (repository is None):
        raise typer.BadParameter("give --repository (a project folder's plan) or --spec (an Image spec's plan), one of them",
                                 param_hint="'--repository' / '--spec'")

    def go() -> Any:
        from ._bases import describe_bases, resolve_plan
        from .pipeline import resolve_bases

        if spec is not None:  # the spec names its repository, Dockerfile and context itself
            image = _load_spec(spec)
            plan = image.plan()  # the plan Image.build() uses (the spec's own Dockerfile, tags, platforms)
            creds = _credentials(ImageRef.parse(plan.repository).registry, username, password_stdin) or image.credentials()
        else:
            assert repository is not None
            plan = _plan(path, repository, dockerfile, tag, build_arg, platform, target, None, "auto", pull)
            creds = _credentials(ImageRef.parse(repository).registry, username, password_stdin)
        plan = resolve_bases(plan, creds)  # with --pull: the digests enter the hash
        state = exists(plan, creds, remote=remote)
        info = {**plan.describe(), "reference": str(plan.ref), "local_image_id": state.local_id,
                "registry_digest": state.remote_digest, **_path_info(plan)}
        try:  # each base with the digest it names now (hashed only with --pull)
            shown = plan if plan.bases is not None else resolve_plan(plan.with_(pin_bases=True), creds)
            info["bases"] = [{**b, "hashed": plan.bases is not None} for b in describe_bases(shown)]
        except FlyImageError as exc:
            info["bases"] = [{"error": str(exc)}]
        if not why:
            return info
        from .inputs import explain

        result = explain(plan, creds, against)
        changes = result["changes"]
        if as_json:
            return {**info, "why": {**result, "changes": changes.as_dict() if changes is not None else None}}
        lines = [f"{key}: {info[key]}" for key in ("reference", "hash", "registry_digest", "path", "path_reason")]
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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False,
             epilog="Example: prefect-flyimage chain -c config.yaml build images/ --select '*python*'")
def chain(ctx: typer.Context) -> None:
    """docker-pkg compatible image trees: takes docker-pkg's arguments (build, publish, update, prune)."""
    from .chain.cli import main as chain_main

    raise typer.Exit(chain_main(list(ctx.args)))


def _check_docker_hosts(value: str) -> None:
    from .distributed import parse_docker_hosts

    if not parse_docker_hosts(value):
        raise ValueError("must name at least one Docker host URL")


@app.command("ensure-all", epilog="Example: prefect-flyimage ensure-all prefect.yaml "
             "--docker-hosts unix:///var/run/docker.sock,ssh://build2 --dask-address tcp://scheduler:8786")
def ensure_all(
    prefect_yaml: Path = typer.Argument(..., help="the prefect.yaml", exists=True, file_okay=True, dir_okay=False),
    deployment: list[str] = typer.Option([], "--deployment", "-d", help="only this deployment (repeatable)",
                                         callback=_checked(_check_nonempty)),
    docker_hosts: Optional[str] = typer.Option(None, "--docker-hosts", metavar="H1,H2,...",
                                               help="build on these Docker hosts, one Dask worker each",
                                               callback=_checked(_check_docker_hosts)),
    dask_address: Optional[str] = typer.Option(None, "--dask-address", metavar="ADDR",
                                               help="Dask scheduler of the build workers (default with --docker-hosts: a local cluster)",
                                               callback=_checked(_check_nonempty)),
    workers: int = typer.Option(4, "--workers", min=1, help="images at once without a cluster"),
    as_json: bool = JsonOpt,
) -> None:
    """Ensure the image of every deployment of a prefect.yaml (build if missing, push if its push step pushes)."""
    from ._deployments_yaml import deployment_images
    from .distributed import parse_docker_hosts
    from .ensure_many import ensure_prefect_yaml_flow

    failed: list[str] = []

    def go() -> Any:
        deployment_images(prefect_yaml, deployment or None)  # bad input fails here, before a flow run starts
        outcomes = ensure_prefect_yaml_flow(
            str(prefect_yaml), deployment or None, parse_docker_hosts(docker_hosts) or None, dask_address, workers,
            raise_on_failure=False,
        )
        failed.extend(o["deployment"] for o in outcomes if o.get("error"))
        if as_json:
            return outcomes
        return "\n".join(
            f"{o['deployment']}: {o['reference']} " + (f"FAILED: {o['error']}" if o.get("error") else
            f"{'built' if o['built'] else 'not built'}, {'pushed' if o['pushed'] else 'not pushed'} {o.get('digest') or o.get('image_id') or ''}".rstrip())
            for o in outcomes
        ) or "no deployment builds an image"

    _run(go, as_json)
    if failed:
        typer.secho(f"error: {len(failed)} image(s) failed: {', '.join(failed)}", err=True, fg="red")
        raise typer.Exit(EXIT_FAILED)


def _check_fly_app(value: str) -> None:
    from .fly import validate_app_name

    validate_app_name(value)


@fly_app.command("ensure", epilog="Example: FLY_API_TOKEN=... prefect-flyimage fly ensure my-app --context .")
def fly_ensure(app_name: str = typer.Argument(..., help="Fly.io app name", callback=_checked(_check_fly_app)),
               tag: str = typer.Option("latest", "--tag", "-t", callback=_checked(_check_tag)),
               context: Optional[Path] = typer.Option(None, "--context", help="docker build context (default: cwd)",
                                                      exists=True, file_okay=False, dir_okay=True),
               token_stdin: bool = typer.Option(False, "--token-stdin", help="read the Fly API token from stdin (else $FLY_API_TOKEN)"),
               as_json: bool = JsonOpt) -> None:
    """Build and push registry.fly.io/APP:TAG unless the registry already holds this context's image."""
    from . import fly

    def go() -> Any:
        token = sys.stdin.readline().strip() if token_stdin else None
        ref = fly.ensure_image_sync(app_name, tag=tag, token=token, docker_context=context)
        return {"reference": ref} if as_json else ref

    _run(go, as_json)


def _click_errors() -> tuple[type[BaseException], ...]:
    """The exception classes command-line parsing raises and knows how to show.

    typer >= 0.22 raises the classes of its bundled click (``typer._click``), which do
    not derive from ``click.ClickException``; older typer raises click's own.
    """
    import click

    classes: list[type[BaseException]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # pragma: no cover - older typer
        pass
    else:
        classes.append(ClickException)
    return tuple(classes)


def _aborts() -> tuple[type[BaseException], ...]:
    import click

    return tuple({click.exceptions.Abort, typer.Abort})


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``prefect-flyimage`` script; returns the exit code.

    Usage errors (unknown option or command, missing or bad argument) print the usage
    message and return 2, whichever click raised them.
    """
    try:
        rv = app(args=argv, prog_name="prefect-flyimage", standalone_mode=False)
        return rv if isinstance(rv, int) else EXIT_OK
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:  # argparse (the chain command) exits 2 after printing its usage
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILED)
    except _aborts():
        typer.echo("Aborted!", err=True)
        return EXIT_FAILED
    except _click_errors() as exc:
        if getattr(exc, "ctx", False) is None:  # some parser errors carry no context: find the command
            exc.ctx = _context_for(sys.argv[1:] if argv is None else argv)  # type: ignore[attr-defined]
        exc.show()  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", EXIT_USAGE))


def _context_for(argv: list[str]) -> Any:
    """A context for the deepest (sub)command named in ``argv``, so its usage line can be shown."""
    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="prefect-flyimage")
    for token in argv:
        sub = getattr(command, "commands", {}).get(token)
        if sub is None:
            if not token.startswith("-"):
                break
            continue
        command = sub
        ctx = command.context_class(command, info_name=token, parent=ctx)
    return ctx


if __name__ == "__main__":
    raise SystemExit(main())
