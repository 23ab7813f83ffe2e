"""The registry: numbered versions of a name, aliases, and references that resolve or say why not."""

from __future__ import annotations

import pytest

from conftest import quick
from tweetforge.registry.versions import RegistryError, list_versions, register, resolve, set_alias
from tweetforge.training.train import train


def test_registry_aliases_and_references(tiny_gpt2, store):
    home, engine, trump, _ = store
    first = register(engine, home / "models", train(quick(tiny_gpt2, max_steps=3, name="tiny-reg"), trump, home), trump)
    second = register(engine, home / "models", train(quick(tiny_gpt2, max_steps=3, name="tiny-reg"), trump, home), trump)
    assert (first.version, second.version) == (1, 2)
    assert resolve(engine, "tiny-reg").version == 2  # no champion: the latest
    set_alias(engine, "tiny-reg:1", "champion")
    assert resolve(engine, "tiny-reg").version == 1
    assert resolve(engine, "tiny-reg:champion").version == 1
    set_alias(engine, "tiny-reg:2", "champion")
    assert [v.aliases for v in list_versions(engine, "tiny-reg")] == [[], ["champion"]]
    with pytest.raises(RegistryError, match="tiny-reg has no version 9"):
        resolve(engine, "tiny-reg:9")
