"""Validation of an :class:`~prefect_flyimage.spec.Image`: every problem at once (a mixin of ``Image``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

from ..errors import InvalidReferenceError, SpecError
from ..names import ImageRef
from ..plan import TAG_LENGTH
from . import config
from .layers import DEFAULT_IGNORE, DockerIgnore, LayerContext, PoetryProject, Requirements, UVProject, UVScript

__all__: list[str] = []

# Context folder of our layer files when the context also holds a user's Dockerfile folder.
_DOCKERFILE_PREFIX = ".prefect-flyimage/"
_PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?")


class _Validation:
    """``problems()``, ``validate()`` and the layers' contexts."""

    # ---- validation ----------------------------------------------------------------
    def _ignore_patterns(self) -> tuple[str, ...]:
        patterns = list(DEFAULT_IGNORE)
        for layer in self._layers:
            if isinstance(layer, DockerIgnore) and layer.path.is_file():
                patterns += layer.patterns()
        return tuple(patterns)

    def _contexts(self, stage_root: Optional[Path] = None, record: Optional[list[Any]] = None) -> list[LayerContext]:
        ignore = self._ignore_patterns()
        prefix = _DOCKERFILE_PREFIX if self.dockerfile is not None else ""
        return [LayerContext(i, ignore, prefix, stage_root, record) for i in range(len(self._layers))]

    def problems(self) -> list[str]:
        """Every problem of the spec (empty when valid); :meth:`validate` raises them."""
        problems: list[str] = []
        if self.dockerfile is not None:
            if self.base_image:
                problems.append("an image cannot have both a Dockerfile and a base image")
            if not self.dockerfile.is_file():
                problems.append(f"from_dockerfile(): {str(self.dockerfile)!r} does not exist or is not a file")
        elif self._ref_name is not None and not self.base_image:
            try:
                base = config.resolve_ref_name(self._ref_name)
                ImageRef.parse(base)
            except (SpecError, InvalidReferenceError) as exc:
                problems += exc.problems if isinstance(exc, SpecError) else [f"from_ref_name({self._ref_name!r}): {exc}"]
        elif not self.base_image:
            problems.append("the image has no base image; pass a full URI such as 'ghcr.io/org/app:1.0' to from_base()")
        else:
            try:
                ImageRef.parse(self.base_image)
            except InvalidReferenceError as exc:
                problems.append(f"base image: {exc}")

        if self._layers and not self.extendable:
            if self.dockerfile is not None:
                problems.append(
                    "layers cannot be added to a from_dockerfile() image: put them in the Dockerfile, "
                    "or make it extendable with .clone(extendable=True) to append them after its last stage"
                )
            else:
                problems.append("layers cannot be added to a non-extendable image; use .clone(extendable=True) first")

        if not self.is_reference:
            if not self.name:
                problems.append(self._no_name_problem())
            else:
                registry = self.effective_registry
                repo = f"{registry.rstrip('/')}/{self.name}" if registry else self.name
                try:
                    ImageRef.parse(f"{repo}:{'0' * TAG_LENGTH}")
                except InvalidReferenceError as exc:
                    problems.append(f"registry/name: {exc}")
            bad = [p for p in self.platform if not _PLATFORM.fullmatch(p)]
            if bad or not self.platform:
                problems.append(f"platform {self.platform!r}: expected values like 'linux/amd64' or 'linux/arm64'")
            elif len(self.platform) > 1:
                problems.append(
                    f"platform {self.platform!r}: the local builder builds one platform at a time; "
                    "clone(platform='linux/arm64') per platform (multi-platform images need buildx)"
                )

        problems += self._combination_problems()
        for ctx, layer in zip(self._contexts(), self._layers):
            problems += layer.problems(ctx)
        return problems

    def _combination_problems(self) -> list[str]:
        kinds = [type(layer) for layer in self._layers]
        problems = []
        if PoetryProject in kinds:
            others = sorted({k.__name__ for k in kinds if k in (Requirements, UVProject, UVScript)})
            if others:
                problems.append(
                    f"with_poetry_project() cannot be combined with {', '.join(others)}: Poetry installs from "
                    "its lock file, another installer would fight it; add the packages to the Poetry project"
                )
            if kinds.count(PoetryProject) > 1:
                problems.append("only one with_poetry_project() per image")
        for layer in self._layers:
            if isinstance(layer, UVScript) and layer.script.is_file():
                try:
                    requires = config.read_script_metadata(layer.script).requires_python
                    if not config.python_satisfies(self.python_version, requires):
                        v = ".".join(map(str, self.python_version))
                        problems.append(
                            f"{layer.describe()}: requires-python {requires!r} excludes the image's Python {v}"
                        )
                except SpecError:
                    pass  # the layer reports it
        return problems

    def validate(self) -> None:
        """Check that every file and folder exists and every combination is legal.

        Raises:
            SpecError: with *all* problems found, one per line.
        """
        problems = self.problems()
        if problems:
            raise SpecError(problems)

    def _secret_problems(self) -> list[str]:
        problems = []
        by_id: dict[str, set[tuple[Optional[str], Optional[str]]]] = {}
        for layer in self._layers:
            for s in layer.secrets:
                by_id.setdefault(s.id, set()).add((s.src, s.env))
        for sid, sources in sorted(by_id.items()):
            if len(sources) > 1:
                problems.append(f"secret {sid!r} is given different sources in different layers")
                continue
            src, env = next(iter(sources))
            if env is not None and env not in os.environ:
                problems.append(f"secret {sid!r}: environment variable {env} is not set in the building process")
            if src is not None and not Path(src).is_file():
                problems.append(f"secret {sid!r}: file {src!r} does not exist")
        return problems

