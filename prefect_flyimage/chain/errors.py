"""Errors of image trees: the classes live in :mod:`prefect_flyimage.errors`; :class:`TreeProblem` here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import TREE_PROBLEM_KINDS, ChainBuildError, IllegalTransitionError, TreeSpecError

#: Kinds of tree problems, in the order they are reported.
PROBLEM_KINDS = TREE_PROBLEM_KINDS


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


__all__ = ["ChainBuildError", "IllegalTransitionError", "PROBLEM_KINDS", "TreeProblem", "TreeSpecError"]
