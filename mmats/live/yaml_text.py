"""Reading a configuration's YAML safely: a SafeLoader that refuses duplicate keys,
reads ``1e9`` as a number (YAML 1.2, not PyYAML's 1.1 rule) and refuses documents whose
aliases expand past a bound, so a "billion laughs" fails at once instead of spinning.
Every problem is a :class:`~mmats.errors.ConfigError` naming the source and the line."""

from __future__ import annotations

import re
from typing import Any

import yaml

from mmats.errors import ConfigError


def read_yaml(text: str, source: str) -> Any:
    """The document in ``text`` (``source`` names it in errors).

    >>> read_yaml("limit: 1e9", "x.yaml")
    {'limit': 1000000000.0}
    """
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except _TooLarge as error:
        raise ConfigError(f"{source}: refused: {error}") from None
    except RecursionError:
        raise ConfigError(f"{source}: refused: the document nests too deeply") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = error.context or ""
        if context and error.context_mark and error.context_mark.line != mark.line:
            context += f" (line {error.context_mark.line + 1})"
        problem = "; ".join(str(part) for part in (context, error.problem) if part)
        raise ConfigError(f"{source}: {where}YAML syntax error: {problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: YAML syntax error: {error}") from None


_MAX_NODES = 100_000  # after alias expansion; a configuration has a few hundred
# YAML 1.2 floats: PyYAML's YAML 1.1 rule wants a dot, so it reads 1e9 as the string '1e9'.
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.VERBOSE)


class _TooLarge(yaml.YAMLError):
    """The document expands (through aliases) beyond :data:`_MAX_NODES` nodes."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of keeping the last one silently,
    reads ``1e9`` as a number, and refuses documents whose aliases expand past
    :data:`_MAX_NODES` nodes (a "billion laughs" fails at once instead of spinning)."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, {}, set())
        return node


def _expanded_size(node, sizes: dict, open_nodes: set) -> int:
    """Nodes under ``node`` counting each alias as a full copy (memoized per node, so the
    cost is the number of distinct nodes); raises :class:`_TooLarge` past the bound."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise _TooLarge(f"line {node.start_mark.line + 1}: an alias refers to the node that "
                        "contains it (a recursive structure)")
    open_nodes.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [item for pair in node.value for item in pair]
    else:
        children = []
    for child in children:
        total += _expanded_size(child, sizes, open_nodes)
        if total > _MAX_NODES:
            raise _TooLarge(f"the document expands to more than {_MAX_NODES:,} values "
                            "through its aliases (*name); a configuration needs far fewer")
    open_nodes.discard(key)
    sizes[key] = total
    return total


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # unhashable keys are reported by the constructor below
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {first + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
