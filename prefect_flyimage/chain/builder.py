"""Scanning a directory of image folders and building the tree (docker-pkg's ``DockerBuilder``)."""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator, Iterable, Mapping, Optional

from ..errors import FlyImageError, redact
from .changelog import CHANGELOG, TEMPLATE, ImageSpec, add_entry, read_spec
from .config import credentials, secrets, setting, state_dir
from ._engine_owner import EngineOwner
from .errors import TreeProblem, TreeSpecError
from .fsm import ImageFSM, StateListener
from .graph import build_order, check_tree, external_names, find_cycles
from .records import VerificationRecords
from .scheduler import run_dag
from .templates import TemplateRenderer, split_label

if TYPE_CHECKING:
    import docker

    from ..engine import Engine

log = logging.getLogger("prefect_flyimage.chain")

#: States after which an image's children may build.
GOOD_STATES = (ImageFSM.STATE_BUILT, ImageFSM.STATE_VERIFIED, ImageFSM.STATE_PUBLISHED)
_NUMERIC_USER = re.compile(r"^USER\s+\d+(?::\d+)?$")


def has_numeric_user(dockerfile: str) -> bool:
    """True when the last ``USER`` line (if any) names a numeric uid (``force_numeric_user``)."""
    numeric = True
    for line in dockerfile.split("\n"):
        if line.startswith("USER "):
            numeric = bool(_NUMERIC_USER.match(line))
    return numeric


class DockerBuilder(EngineOwner):
    """Scans ``directory`` for image folders and builds them in dependency order.

    Args:
        directory: the tree root (relative paths are taken from the current directory).
        config: the configuration (see :func:`~prefect_flyimage.chain.config.read_config`).
        selection: a glob on ``name:tag`` labels choosing the images to build.
        nocache: build without the layer cache.
        pull: consult the registry (published check, pulling published parents and base images).
        client: a docker-py client (wrapped in an Engine); by default one from the environment.
        engine: an Engine to use instead.
        nightly_format: ``strftime`` format appended to every tag (``--nightly``/``--snapshot``).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        config: Mapping[str, Any],
        selection: Optional[str] = None,
        nocache: bool = True,
        pull: bool = True,
        *,
        client: Optional["docker.DockerClient"] = None,
        engine: Optional["Engine"] = None,
        nightly_format: Optional[str] = None,
    ) -> None:
        self.root = os.path.join(os.getcwd(), os.fspath(directory)) if not os.path.isabs(directory) else os.fspath(directory)
        self.config = config
        self.glob = selection
        self.nocache = nocache
        if config.get("registry") is None:
            if pull:
                log.warning("Not pulling images remotely as no registry is defined.")
            self.pull = False
        else:
            self.pull = pull
        self.base_images: list[str] = list(config.get("base_images") or [])
        self.nightly_format = nightly_format
        self._client = client
        self._engine = engine
        #: Labels of every known image: base images and scanned ones (docker-pkg's set).
        self.known_images: set[str] = set(self.base_images)
        self._labels_by_name: dict[str, str] = {}
        self.renderer = TemplateRenderer(config, self._labels_by_name)
        self.records = VerificationRecords(state_dir(config))
        self.all_images: set[ImageFSM] = set()
        self._build_chain: list[ImageFSM] = []
        self.listeners: list[StateListener] = []

    def __enter__(self) -> "DockerBuilder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def client(self) -> "docker.DockerClient":
        """The docker-py client (docker-pkg compatibility)."""
        return self.engine.client

    # ---- scanning -----------------------------------------------------------------
    def _image_folders(self) -> list[Path]:
        folders = []
        for root, dirs, files in os.walk(self.root):
            dirs.sort()
            has_template, has_changelog = TEMPLATE in files, CHANGELOG in files
            if not has_template and not has_changelog:
                continue
            if not has_template:
                log.warning("Ignoring %s since it lacks a Dockerfile.template", root)
            elif not has_changelog:
                log.warning("Ignoring %s since it lacks a changelog", root)
            else:
                folders.append(Path(root))
        return folders

    def scan(self, max_workers: int = 1, *, inspect: bool = True) -> None:
        """Scan the directory, check the whole tree, and find each image's state.

        Every problem (unreadable metadata, duplicate names, missing dependencies,
        cycles, template errors and, with ``inspect``, tags Docker would reject) is
        raised at once as a :class:`TreeSpecError` naming the folders. ``inspect=False``
        stops after rendering: no Docker call at all, every image ``to_build``.
        ``max_workers`` threads look images up in the daemon and registry.
        """
        specs: list[ImageSpec] = []
        problems: list[TreeProblem] = []
        for folder in self._image_folders():
            try:
                specs.append(read_spec(folder, self.nightly_format))
            except (OSError, ValueError) as exc:
                problems.append(TreeProblem("metadata", f"cannot read the image metadata: {exc}", (str(folder),)))
        problems += check_tree(specs, external_names(self.base_images))
        broken = {p.image for p in problems if p.kind in ("duplicate", "cycle")}
        fsms: dict[str, ImageFSM] = {}
        by_name = {s.name: s for s in specs if s.name not in broken}
        parents = {n: [d for d in s.depends if d in by_name] for n, s in by_name.items()}
        cyclic = {n for c in find_cycles(parents) for n in c}
        for name in build_order([n for n in by_name if n not in cyclic], {n: ps for n, ps in parents.items() if n not in cyclic}):
            spec = by_name[name]
            fsm = ImageFSM(
                spec.folder, self._client, self.config, self.nocache, self.pull,
                engine=self._engine, renderer=self.renderer, inspect=False, spec=spec, records=self.records,
                parents=[fsms[p] for p in parents[name] if p in fsms],
            )
            fsm.listeners = self.listeners
            fsms[name] = fsm
            self._labels_by_name[fsm.name] = fsm.label
            self.known_images.add(fsm.label)
        for fsm in fsms.values():
            for parent in fsm.parents:
                parent.add_child(fsm)
            try:
                text = fsm.render_dockerfile()
                if setting(self.config, "force_numeric_user") and not has_numeric_user(text):
                    problems.append(TreeProblem(
                        "numeric-user", 'last USER instruction names no numeric uid (see "force_numeric_user")',
                        (fsm.path,), fsm.short_name,
                    ))
                if inspect:
                    _ = fsm.plan
            except TreeSpecError as exc:
                problems += exc.issues
        if problems:
            raise TreeSpecError(problems)
        if inspect:
            self._engine = self.engine  # one engine for all images, created before the threads
            for fsm in fsms.values():
                fsm._engine = self._engine
            with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
                list(pool.map(lambda f: f.refresh_state(), fsms.values()))
        self.all_images = set(fsms.values())

    # ---- queries ------------------------------------------------------------------
    def _matches_glob(self, img: ImageFSM) -> bool:
        return self.glob is None or fnmatch.fnmatch(img.label, self.glob)

    def images_in_state(self, state: str) -> list[ImageFSM]:
        """All images in ``state`` (sorted by name)."""
        if state not in ImageFSM.STATES:
            raise ValueError(f"Invalid state {state}")
        return sorted((img for img in self.all_images if img.state == state), key=lambda i: i.short_name)

    def _img_from_name(self, name: str) -> Optional[ImageFSM]:
        return next((img for img in self.all_images if img.short_name == name), None)

    @property
    def build_chain(self) -> list[ImageFSM]:
        """Selected images to build plus their to-build ancestors, parents first."""
        to_build = {img.short_name: img for img in self.images_in_state(ImageFSM.STATE_TO_BUILD)}
        parents = {n: [d for d in img.depends if d in to_build] for n, img in to_build.items()}
        cycles = find_cycles(parents)
        if cycles:
            raise TreeSpecError(
                TreeProblem("cycle", "dependency cycle: " + " -> ".join([*c, c[0]]), tuple(to_build[n].path for n in c), c[0])
                for c in cycles
            )
        selected = [n for n, img in to_build.items() if self._matches_glob(img)]
        self._build_chain = [to_build[n] for n in build_order(selected, parents)]
        return self._build_chain

    def prune_chain(self) -> list[ImageFSM]:
        """The images whose old versions to prune, children first."""
        for fsm in self.all_images:
            if self._matches_glob(fsm):
                fsm.state = ImageFSM.STATE_TO_BUILD
            elif fsm.state == ImageFSM.STATE_TO_BUILD:
                fsm.state = ImageFSM.STATE_BUILT
        chain = self.build_chain
        chain.reverse()
        return chain

    def images_to_update(self) -> set[ImageFSM]:
        """The selected images and all their descendants."""
        for img in self.all_images:
            for dep in img.depends:
                parent = self._img_from_name(dep)
                if parent is None and dep not in external_names(self.base_images):
                    raise TreeSpecError([TreeProblem("missing-dependency", f"Image {dep} (dependency of {img.label}) not found", (img.path,), img.short_name)])
                if parent is not None:
                    parent.add_child(img)
        result: set[ImageFSM] = set()
        for img in self.all_images:
            if self._matches_glob(img):
                result.update(img.all_children())
        return result

    def update_images(self, images: Iterable[ImageFSM], reason: str, baseimg: str, version: Optional[str] = None) -> None:
        """Add a changelog entry to each image: ``baseimg`` gets ``reason`` (and ``version``),
        the others a "Refresh for update in parent image" entry with the next update version."""
        dep_reason = f"Refresh for update in parent image {baseimg}:\n{reason}"
        for img in sorted(images, key=lambda i: i.short_name):
            if img.short_name == baseimg:
                add_entry(img.spec, reason, self.config, version=version)
            else:
                add_entry(img.spec, dep_reason, self.config)

    # ---- actions ------------------------------------------------------------------
    def pull_dependencies(self, fsm: ImageFSM) -> None:
        """Pull the published parents of ``fsm`` missing from the daemon; a failure puts ``fsm`` in error."""
        creds = credentials(self.config)
        for name in fsm.depends:
            dep = self._img_from_name(name)
            if dep is None or dep.state != ImageFSM.STATE_PUBLISHED:
                continue
            try:
                if self.engine.local_image(dep.label) is None:
                    log.info("Pulling image %s, dependency of %s", dep.label, fsm.name)
                    self.engine.pull(dep.label, creds)
            except FlyImageError as exc:
                fsm.error = redact(f"pulling parent {dep.label} failed: {exc}", secrets(self.config))
                log.error("%s: %s", fsm.label, fsm.error)
                fsm.state = ImageFSM.STATE_ERROR

    def refresh_base_images(self) -> None:
        """Pull ``base_images`` (when pulling and ``refresh_base_images``); a local copy is enough on failure."""
        if not (self.pull and setting(self.config, "refresh_base_images")):
            return
        creds = credentials(self.config)
        for label in self.base_images:
            ours = creds if creds and split_label(label)[0].startswith(creds.registry + "/") else None
            try:
                log.info("Refreshing %s", label)
                self.engine.pull(label, ours)
            except FlyImageError as exc:
                if self.engine.local_image(label) is None:
                    raise
                log.warning("could not refresh base image %s, using the local copy: %s", label, exc)

    def _build_one(self, img: ImageFSM) -> ImageFSM:
        if self.pull:
            self.pull_dependencies(img)
        if img.state == ImageFSM.STATE_TO_BUILD:
            img.build()
            # Verify every image built, even when it will not be published.
            if img.state == ImageFSM.STATE_BUILT:
                img.verify()
        return img

    def build(self, max_workers: Optional[int] = None) -> Generator[ImageFSM, None, None]:
        """Build and verify the images of the build chain, yielding each as it finishes.

        Images whose parents are done build in parallel on ``max_workers`` threads
        (default: the ``build_workers`` setting; 1 keeps docker-pkg's order). An image
        whose parent failed is not built: it stays ``to_build`` with ``blocked_by`` set.
        """
        self.refresh_base_images()
        chain = self.build_chain
        workers = max_workers or int(setting(self.config, "build_workers") or 1)
        by_name = {img.short_name: img for img in chain}
        parents = {img.short_name: [p.short_name for p in img.parents] for img in chain}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flyimage-chain") as pool:
            def submit(name: str, _parents: list[Future]) -> Future:
                return pool.submit(self._build_one, by_name[name])

            def succeeded(name: str, fut: Future) -> bool:
                return fut.exception() is None and by_name[name].state in GOOD_STATES

            for event in run_dag(list(by_name), parents, submit, succeeded, max_in_flight=workers):
                img = by_name[event.name]
                if event.status == "failed" and img.state != ImageFSM.STATE_ERROR:
                    exc = event.future.exception() if event.future else None
                    img.error = redact(f"unexpected failure: {exc}", secrets(self.config))
                    img.state = ImageFSM.STATE_ERROR
                elif event.status == "blocked":
                    img.blocked_by = event.cause
                yield img
        from .report import report_run

        report_run(self.all_images, "build")

    def publish(self) -> Generator[ImageFSM, None, None]:
        """Verify the built images, then publish every verified one to the registry."""
        if not self.config.get("registry"):
            log.warning("Cannot publish if no registry is defined")
            return
        if not (self.config.get("username") and self.config.get("password")):
            log.warning("Cannot publish images if both username and password are not set")
            return
        for img in self.images_in_state(ImageFSM.STATE_BUILT):
            img.verify()
        for img in self.images_in_state(ImageFSM.STATE_VERIFIED):
            img.publish()
            yield img
        from .report import report_run

        report_run(self.all_images, "publish")


__all__ = ["DockerBuilder", "GOOD_STATES", "has_numeric_user"]
