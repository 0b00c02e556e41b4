"""``python -m prefect_flyimage.chain``: docker-pkg's command line on our builder.

Same arguments as docker-pkg (``-c config.yaml build DIR --select GLOB``, ``prune``,
``update``) plus ``publish`` and parallel builds (``--workers N``, or ``--prefect`` to
run the Prefect flow). Every state change of every image is printed as it happens.
Exit codes: 0 all good, 1 an image failed, 2 the tree or the arguments are invalid.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from typing import Optional, Sequence, TextIO

from ..errors import FlyImageError, redact
from .builder import DockerBuilder
from .config import read_config, secrets, setting
from .errors import ChainBuildError, TreeSpecError
from .fsm import ImageFSM

NIGHTLY_FORMAT = "%Y%m%d"
SNAPSHOT_FORMAT = "%Y%m%d-%H%M%S"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _docker_hosts(text: str) -> list[str]:
    from ..distributed import parse_docker_hosts

    try:
        hosts = parse_docker_hosts(text)
    except FlyImageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not hosts:
        raise argparse.ArgumentTypeError("must name at least one docker host")
    return hosts


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse docker-pkg's command line (and our additions).

    A usage error (unknown option, missing or bad argument) prints the usage and exits 2,
    as argparse does.
    """
    return _parser().parse_args(list(argv))


def _subparser(parser: argparse.ArgumentParser, mode: str) -> argparse.ArgumentParser:
    for action in parser._subparsers._group_actions if parser._subparsers else ():  # noqa: SLF001
        choices = getattr(action, "choices", None) or {}
        if mode in choices:
            return choices[mode]
    return parser


def usage_error(message: str, mode: Optional[str] = None) -> int:
    """Print the usage of ``mode`` (or of the command) and ``message`` on stderr; return 2."""
    parser = _parser()
    target = _subparser(parser, mode) if mode else parser
    target.print_usage(sys.stderr)
    print(f"{target.prog}: error: {message}", file=sys.stderr)
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefect-flyimage chain", description="Build trees of docker-pkg images.",
        epilog="Example: prefect-flyimage chain -c config.yaml build images/ --select '*python*'",
    )
    parser.add_argument("-c", "--configfile", default="config.yaml")
    level = parser.add_argument_group(title="logging options").add_mutually_exclusive_group()
    level.add_argument("--debug", action="store_true", help="Activate debug logging")
    level.add_argument("--info", action="store_true", help="Activate info logging")
    actions = parser.add_subparsers(dest="mode", required=True, help="build, publish, prune or update")

    build = actions.add_parser("build", help="Build images (and publish them to the registry)")
    nightly = build.add_mutually_exclusive_group()
    nightly.add_argument("--nightly", action="store_true", help="Prepare a nightly build")
    nightly.add_argument("--snapshot", action="store_true", help="Create a snapshot build")
    build.add_argument("--use-cache", dest="nocache", action="store_false", help="Use the Docker layer cache")
    build.add_argument("--no-pull", dest="pull", action="store_false", help="Do not consult or pull from the registry")
    build.add_argument("--select", metavar="GLOB", type=_nonempty, default=None, help="A glob on name:tag of the images to build")
    build.add_argument("--workers", type=_positive_int, default=None, help="Images built in parallel (default: build_workers; with --prefect 4, on build hosts their build slots)")
    build.add_argument("--prefect", action="store_true", help="Run as the Prefect flow build_tree_flow")
    build.add_argument("--no-publish", dest="publish", action="store_false", help="Build and verify only")
    build.add_argument("--docker-hosts", metavar="H1,H2,...", type=_docker_hosts, default=None,
                       help="Build on these Docker hosts, one Dask worker each (implies --prefect)")
    build.add_argument("--dask-address", metavar="ADDR", type=_nonempty, default=None,
                       help="Dask scheduler of the build workers (default: a local cluster; implies --prefect)")
    build.add_argument("--builds-per-host", metavar="N", type=_positive_int, default=None,
                       help="Images each host of the local cluster builds at once (default: 1; a remote "
                       "worker's --resources docker-build=N says it)")

    publish = actions.add_parser("publish", help="Verify and publish images already built")
    publish.add_argument("--select", metavar="GLOB", type=_nonempty, default=None, help="A glob on name:tag of the images")

    prune = actions.add_parser("prune", help="Prune local outdated versions of images in DIRECTORY")
    prune.add_argument("--select", metavar="GLOB", type=_nonempty, default=None, help="A glob on name:tag of the images")
    prune.add_argument("--nightly", default=False, metavar="NIGHTLY_IDENTIFIER", help="Keep only this nightly build")

    update = actions.add_parser("update", help="Add a changelog entry to an image and all its descendants")
    update.add_argument("select", metavar="NAME", type=_nonempty, help="The image being updated")
    update.add_argument("--reason", default="Security update", help="Reason for the update")
    update.add_argument("--version", "-v", default=None, help="Version for the updated image")

    for sub in (build, publish, prune, update):
        sub.add_argument("directory", metavar="DIRECTORY", help="The directory to scan for images")
    return parser


def config_problems(config: dict) -> list[str]:
    """Values of the numeric settings the command line uses that are not numbers in range."""
    problems = []
    for key in ("scan_workers", "build_workers"):
        value = setting(config, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            problems.append(f"{key} must be a whole number >= 1, not {value!r}")
    for key in ("build_timeout", "verify_timeout"):
        value = setting(config, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            problems.append(f"{key} must be a positive number of seconds, not {value!r}")
    return problems


class _Printer:
    """Prints each image's state changes (thread-safe: builds may run in parallel)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()

    def __call__(self, img: ImageFSM, old: str, new: str) -> None:
        line = f"* {img.label}: {old} -> {new}"
        if new == ImageFSM.STATE_ERROR and img.error:
            line += f" ({img.error.splitlines()[0][:300]})"
        with self._lock:
            print(line, file=self.out, flush=True)


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.info else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s [flyimage-chain] %(levelname)s - %(message)s")


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout) -> int:
    """Run the command line; returns the exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not os.path.isdir(args.directory):
        return usage_error(f"DIRECTORY {args.directory!r} is not an existing folder", args.mode)
    _setup_logging(args)
    try:
        config = read_config(args.configfile)
    except (OSError, ValueError) as exc:
        return usage_error(f"cannot read config {args.configfile}: {exc}")
    problems = config_problems(config)
    if problems:
        return usage_error(f"config {args.configfile}: " + "; ".join(problems))
    if config.get("ca_bundle"):
        os.environ["REQUESTS_CA_BUNDLE"] = str(config["ca_bundle"])
    try:
        return _run(args, config, out)
    except TreeSpecError as exc:
        print(f"error: the image tree in {args.directory} is invalid:", file=sys.stderr)
        for problem in exc.issues:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    except FlyImageError as exc:
        print(f"error: {redact(str(exc), secrets(config))}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, config: dict, out: TextIO) -> int:
    nightly = None
    if args.mode == "build" and args.nightly:
        nightly = NIGHTLY_FORMAT
    elif args.mode == "build" and args.snapshot:
        nightly = SNAPSHOT_FORMAT
    elif args.mode == "prune" and args.nightly:
        nightly = args.nightly
    select = f"*{args.select}:*" if args.mode == "update" else args.select
    # Prune, publish and update never pull; build does unless --no-pull.
    pull = getattr(args, "pull", True) if args.mode == "build" else args.mode == "publish"
    if args.mode == "build" and args.builds_per_host is not None and (args.dask_address or not args.docker_hosts):
        # a remote worker's slots are its own --resources; without hosts there is no cluster
        return usage_error("--builds-per-host needs --docker-hosts and no --dask-address", args.mode)
    if args.mode == "build" and (args.prefect or args.docker_hosts or args.dask_address):
        return _run_flow(args, out)
    builder = DockerBuilder(args.directory, config, select, getattr(args, "nocache", True), pull, nightly_format=nightly)
    builder.listeners.append(_Printer(out))
    print(f"== Step 0: scanning {builder.root} ==", file=out)
    builder.scan(max_workers=int(setting(config, "scan_workers") or 1), inspect=args.mode != "update")
    if args.mode == "build":
        return _build(builder, args, out)
    if args.mode == "publish":
        return _publish(builder, out)
    if args.mode == "prune":
        return _prune(builder, out)
    return _update(builder, args, out)


def _build(builder: DockerBuilder, args: argparse.Namespace, out: TextIO) -> int:
    chain = builder.build_chain
    print("Will build the following images:", file=out)
    for img in chain:
        print(f"* {img.label}", file=out)
    print("== Step 1: building images ==", file=out)
    failed = 0
    for img in builder.build(max_workers=args.workers):
        if img.state == ImageFSM.STATE_VERIFIED:
            print(f"* Built image {img.label}", file=out)
        elif img.blocked_by:
            print(f" NOT BUILT: image {img.label}, its parent {img.blocked_by} failed", file=out)
            failed += 1
        else:
            print(f" ERROR: image {img.label} failed to build: {img.error or img.state}", file=out)
            failed += 1
    if args.publish:
        failed += _publish(builder, out, step="== Step 2: publishing ==")
    print("== Build done! ==", file=out)
    return 1 if failed else 0


def _publish(builder: DockerBuilder, out: TextIO, step: str = "== Step 1: publishing ==") -> int:
    print(step, file=out)
    if not (builder.config.get("username") and builder.config.get("password")):
        print("NOT publishing images as we have no auth setup", file=out)
        return 0
    failed = 0
    for img in builder.publish():
        if img.state == ImageFSM.STATE_PUBLISHED:
            print(f"Successfully published image {img.label} ({img.digest})", file=out)
        else:
            failed += 1
    return 1 if failed else 0


def _prune(builder: DockerBuilder, out: TextIO) -> int:
    chain = builder.prune_chain()
    print("Will prune old versions of the following images:", file=out)
    for img in chain:
        print(f"* {img.label}", file=out)
    print("== Step 1: pruning images", file=out)
    errors = 0
    for img in chain:
        print(f"* Pruning old versions of {img.label}", file=out)
        try:
            removed = prune_old_versions(builder, img)
        except FlyImageError as exc:
            print(f"* Errors pruning old images for {img.label}: {exc}", file=out)
            errors += 1
        else:
            for ref in removed:
                print(f"  removed {ref}", file=out)
    return 1 if errors else 0


def prune_old_versions(builder: DockerBuilder, img: ImageFSM) -> list[str]:
    """Remove local tags of ``img``'s repository other than its current version (and content tag)."""
    lister = getattr(builder.engine, "list_tags", None)
    if lister is None:
        raise FlyImageError("pruning needs Engine.list_tags(repository), which this version of the core lacks")
    keep = {img.tag, "latest"}
    removed = []
    for tag in lister(img.name):
        if tag not in keep and not _is_content_tag_of(img, tag):
            if builder.engine.remove(f"{img.name}:{tag}"):
                removed.append(f"{img.name}:{tag}")
    return removed


def _is_content_tag_of(img: ImageFSM, tag: str) -> bool:
    try:
        return tag == img.plan.content_tag
    except FlyImageError:
        return False


def _update(builder: DockerBuilder, args: argparse.Namespace, out: TextIO) -> int:
    to_update = builder.images_to_update()
    print("Will update the following images: ", file=out)
    for img in sorted(to_update, key=lambda i: i.short_name):
        print(f"* {img.name}", file=out)
    print("== Step 1: adding updates", file=out)
    builder.update_images(to_update, args.reason, args.select, version=args.version)
    return 0


def _run_flow(args: argparse.Namespace, out: TextIO) -> int:
    from .flows import build_tree_flow

    try:
        outcomes = build_tree_flow(
            args.directory, args.configfile, args.select, max_concurrency=args.workers,
            publish=args.publish, nocache=args.nocache, pull=args.pull, raise_on_failure=True,
            docker_hosts=args.docker_hosts, dask_address=args.dask_address,
            builds_per_host=args.builds_per_host or 1,
        )
    except ChainBuildError as exc:
        print(f"error: {exc}", file=out)
        return 1
    for o in outcomes:
        on = f" on {o['docker_host']}" if o.get("docker_host") else ""
        print(f"* {o['image']}: {o['state']}" + (f" ({o['digest']})" if o.get("digest") else "") + on, file=out)
    return 0


__all__ = ["main", "parse_args", "prune_old_versions"]
