"""Errors of image trees, all in the :mod:`prefect_flyimage.errors` hierarchy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from ..errors import FlyImageError, SpecError

#: Kinds of tree problems, in the order they are reported.
PROBLEM_KINDS = ("metadata", "duplicate", "missing-dependency", "cycle", "template", "tag", "numeric-user")


@dataclass(frozen=True)
class TreeProblem:
    """One problem in an image tree, naming the folders involved."""

    kind: str  #: one of :data:`PROBLEM_KINDS`
    message: str
    folders: tuple[str, ...] = ()
    image: Optional[str] = None  #: short image name, when known

    def __str__(self) -> str:
        where = ", ".join(self.folders)
        return f"[{self.kind}] {self.message}" + (f" (in {where})" if where else "")


class TreeSpecError(SpecError):
    """An image tree cannot be built as written; :attr:`issues` lists every problem found.

    Raised once with *all* problems (cycles, duplicate names, missing dependencies,
    template errors, invalid tags) before anything is built.
    """

    def __init__(self, issues: Iterable[TreeProblem]) -> None:
        order = {k: i for i, k in enumerate(PROBLEM_KINDS)}
        self.issues: list[TreeProblem] = sorted(dict.fromkeys(issues), key=lambda p: (order.get(p.kind, 99), p.folders, p.message))
        super().__init__(str(p) for p in self.issues)

    def of_kind(self, kind: str) -> list[TreeProblem]:
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


__all__ = ["ChainBuildError", "IllegalTransitionError", "PROBLEM_KINDS", "TreeProblem", "TreeSpecError"]
