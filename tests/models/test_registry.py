"""Every part a shipped config can build has a registered name, and names are unambiguous."""

from __future__ import annotations

import inspect

import hydra
import pytest
from omegaconf import OmegaConf

from segmenter.core.bounds import Number
from segmenter.models import registry
from segmenter.models.attention import WINDOW_SIZE, LocalizedAttention
from segmenter.models.net import DIM
from tests.helpers import CONF


def config_parts():
    """(file, class, partial) for every part a YAML of conf/attention and conf/encoder names."""
    for group in ("attention", "encoder"):
        for path in sorted((CONF / group).glob("*.yaml")):
            node = OmegaConf.to_container(OmegaConf.load(path))
            stack = [node]
            while stack:
                node = stack.pop()
                if isinstance(node, dict):
                    if "_target_" in node:
                        yield path.name, hydra.utils.get_class(node["_target_"]), bool(node.get("_partial_", False))
                    stack.extend(node.values())


@pytest.mark.parametrize("where,cls,partial", list(config_parts()), ids=lambda v: getattr(v, "__name__", str(v)))
def test_every_configured_part_is_registered_as_it_is_built(where, cls, partial):
    name = registry.name_of(cls)
    assert registry.get(name).cls is cls and registry.get(name).partial == partial, where


def test_names_are_unique_and_a_subclass_is_not_its_parent():
    classes = [part.cls for part in registry.BUILTIN.values()]
    assert len(set(classes)) == len(classes)

    class Tweaked(LocalizedAttention):
        pass

    with pytest.raises(KeyError, match=r"Tweaked is not a registered part.*segmenter.parts"):
        registry.name_of(Tweaked)
    with pytest.raises(KeyError, match=r"no part is registered as 'tweaked'; registered: \[.*'localized'"):
        registry.get("tweaked")


def test_a_removed_part_says_why_it_went():
    with pytest.raises(KeyError, match=r"'lead_words': LeadWords .* was removed: no gain .*removed-options"):
        registry.get("lead_words")
    assert "lead_words" not in registry.names()


def test_the_table_is_read_only():
    with pytest.raises(TypeError):
        registry.BUILTIN["localized"] = registry.BUILTIN["self"]


def test_a_plugin_cannot_take_a_built_in_name(tmp_path, monkeypatch):
    info = tmp_path / "bad_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[segmenter.parts]\nlocalized = os:system\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registry.get("localized").cls is LocalizedAttention  # built-ins never consult plugins
    with pytest.raises(
        ValueError, match=r"entry point localized=os:system \(segmenter.parts\) takes a built-in part's name"
    ):
        registry.names()


def test_a_parts_limits_are_the_bounds_its_constructor_checks():
    """The loader's limits are the Numbers the parts' modules declare, not numbers of their
    own: a size one side refuses, the other refuses too (the largest allowed is built)."""
    for name, part in registry.BUILTIN.items():
        for arg, bound in part.limits.items():
            assert isinstance(bound, Number), (name, arg)
            assert arg in inspect.signature(part.cls).parameters, (name, arg)
    net = registry.BUILTIN["segmenter_net"].limits
    assert net["dim"] is DIM and registry.BUILTIN["localized"].limits["window_size"] is WINDOW_SIZE
    with pytest.raises(ValueError, match=r"window_size=2097153: expected a whole number from 1 to 1,048,576"):
        LocalizedAttention(dim=16, num_heads=2, window_size=(1 << 21) + 1)
