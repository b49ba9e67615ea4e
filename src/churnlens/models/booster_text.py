"""LightGBM's text model format, checked by churnlens before LightGBM reads it.

LightGBM trusts a model string: a tree whose ``split_feature``, ``left_child`` or
``right_child`` point outside the tree or the feature list makes prediction read (and
crash) outside its memory. :func:`checked_booster` therefore parses the trees itself and
refuses, with a :class:`~churnlens.errors.ModelError`, anything churnlens never writes:
more than one class, categorical splits, linear trees, or a tree that is not a proper
binary tree over the model's features (every internal node but the root the child of one
earlier node, every leaf reached exactly once). The ``tree_sizes`` line, which LightGBM
uses as byte offsets, is dropped: LightGBM then reads the trees one after the other.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from churnlens.errors import ModelError

MAX_LEAVES = 1 << 20
MAX_FEATURES = 1 << 16


def _refuse(where: str, what: str) -> ModelError:
    return ModelError(f"unreadable model file: {where}: {what}")


def _blocks(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The header's and each tree's ``key=value`` lines."""
    header: dict[str, str] = {}
    trees: list[dict[str, str]] = []
    current = header
    for line in text.split("\n"):
        line = line.strip()
        if line == "end of trees":
            break
        if line.startswith("Tree="):
            current = {"Tree": line[5:]}
            trees.append(current)
        elif "=" in line:
            key, _, value = line.partition("=")
            if key in current:
                raise _refuse("booster", f"{key!r} given twice")
            current[key] = value
    return header, trees


def _ints(tree: dict[str, str], key: str, size: int, where: str) -> np.ndarray:
    try:
        values = np.array(tree.get(key, "").split(), dtype=np.int64)
    except (ValueError, OverflowError):
        raise _refuse(where, f"{key} is not a list of integers") from None
    if values.size != size:
        raise _refuse(where, f"{key} has {values.size} values, expected {size}")
    return values


def _integers(block: dict[str, str], where: str, **defaults: str) -> list[int]:
    """The integer values of ``block``'s keys (a default of "" means required)."""
    try:
        return [int(block.get(key, default)) for key, default in defaults.items()]
    except ValueError:
        raise _refuse(where, f"{', '.join(defaults)}: not all integers") from None


def _check_tree(tree: dict[str, str], features: int, where: str) -> None:
    leaves, categorical, linear = _integers(tree, where, num_leaves="", num_cat="0", is_linear="0")
    if not 1 <= leaves <= MAX_LEAVES or categorical != 0 or linear != 0:
        raise _refuse(where, f"{leaves} leaves, {categorical} categorical splits, linear={linear}")
    if len(tree.get("leaf_value", "").split()) != leaves:
        raise _refuse(where, f"leaf_value does not have {leaves} values")
    for key in ("leaf_weight", "leaf_count"):  # empty in a one-leaf tree
        if len(tree.get(key, "").split()) not in (0, leaves):
            raise _refuse(where, f"{key} does not have {leaves} values")
    if leaves == 1:
        return
    inner = leaves - 1
    split = _ints(tree, "split_feature", inner, where)
    if split.min() < 0 or split.max() >= features:
        raise _refuse(where, f"a split on feature {int(split.max())} of {features}")
    if (_ints(tree, "decision_type", inner, where) & 1).any():
        raise _refuse(where, "a categorical split")
    if len(tree.get("threshold", "").split()) != inner:
        raise _refuse(where, f"threshold does not have {inner} values")
    children = np.concatenate(
        [_ints(tree, "left_child", inner, where), _ints(tree, "right_child", inner, where)]
    )
    parents = np.tile(np.arange(inner), 2)
    nodes, leaf_ids = children[children >= 0], ~children[children < 0]
    if (children[children >= 0] <= parents[children >= 0]).any() or (nodes >= inner).any():
        raise _refuse(where, "a child node that is not a later internal node")
    if (leaf_ids >= leaves).any():
        raise _refuse(where, "a child leaf beyond num_leaves")
    if sorted(nodes.tolist()) != list(range(1, inner)) or sorted(leaf_ids.tolist()) != list(
        range(leaves)
    ):
        raise _refuse(where, "not a binary tree (a node or leaf reached twice or never)")


def checked_booster(text: str, name: str = "booster") -> lgb.Booster:
    """A LightGBM booster from its text format, after the checks of the module docstring."""
    header, trees = _blocks(text)
    last, classes, per_iteration = _integers(
        header, name, max_feature_idx="", num_class="1", num_tree_per_iteration="1"
    )
    features = last + 1
    if not 1 <= features <= MAX_FEATURES or classes != 1 or per_iteration != 1:
        raise _refuse(name, f"{features} features, {classes} classes, {per_iteration} trees")
    if len(header.get("feature_names", "").split()) != features:
        raise _refuse(name, "feature_names does not list max_feature_idx + 1 names")
    if not trees:
        raise _refuse(name, "no trees")
    for i, tree in enumerate(trees):
        if tree["Tree"] != str(i):
            raise _refuse(name, f"tree {i} is numbered {tree['Tree'][:20]!r}")
        _check_tree(tree, features, f"{name}, tree {i}")
    kept = "\n".join(line for line in text.split("\n") if not line.startswith("tree_sizes="))
    try:
        return lgb.Booster(model_str=kept)
    except lgb.basic.LightGBMError as exc:
        raise _refuse(name, str(exc)[:200]) from None
