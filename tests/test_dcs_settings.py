"""The `etcd:` and `zookeeper:` config sections: good ones parse, bad ones name the setting that is wrong."""

from __future__ import annotations

import pytest

from adapters.dcs import DcsConfigError, EtcdSettings, ZooKeeperSettings, settings_from
from adapters.dcs.settings import etcd_settings, parse_host, zookeeper_settings


def test_the_classic_etcd_section_parses():
    settings = etcd_settings({"scope": "batman", "ttl": 30, "host": "127.0.0.1:4001"})
    assert settings == EtcdSettings(scope="batman", hosts=(("127.0.0.1", 4001),), ttl_s=30.0)


def test_etcd_hosts_as_a_list_or_a_comma_separated_string():
    as_list = etcd_settings({"scope": "s", "hosts": ["a:2379", "b:2380", "c"]})
    as_text = etcd_settings({"scope": "s", "hosts": "a:2379,b:2380,c"})
    assert as_list.hosts == as_text.hosts == (("a", 2379), ("b", 2380), ("c", 2379))


def test_the_top_level_scope_and_namespace_apply_when_the_section_has_none():
    settings = settings_from({"scope": "batman", "namespace": "/regent/", "etcd": {"host": "h:1"}})
    assert isinstance(settings, EtcdSettings) and settings.scope == "batman" and settings.namespace == "/regent/"


def test_the_classic_zookeeper_section_with_exhibitor_parses():
    section = {
        "scope": "batman",
        "session_timeout": 30,
        "reconnect_timeout": 10,
        "hosts": ["127.0.0.1:2181", "127.0.0.2:2181"],
        "exhibitor": {"poll_interval": 300, "port": 8181, "hosts": ["host1", "host2"]},
    }
    settings = zookeeper_settings(section)
    assert settings.hosts == (("127.0.0.1", 2181), ("127.0.0.2", 2181))
    assert settings.exhibitor is not None and settings.exhibitor.hosts == ("host1", "host2")
    assert settings.exhibitor.port == 8181 and settings.exhibitor.poll_interval_s == 300


def test_with_exhibitor_the_zookeeper_hosts_may_be_left_out():
    settings = zookeeper_settings({"scope": "s", "exhibitor": {"port": 8181, "hosts": ["e1"]}})
    assert isinstance(settings, ZooKeeperSettings) and settings.hosts == ()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"scope": "s", "host": "127.0.0.1:notaport"}, "etcd.host: port 'notaport'"),
        ({"scope": "s", "host": "http://127.0.0.1:2379"}, "etcd.host: 'http://127.0.0.1:2379' is not host:port"),
        ({"scope": "s", "host": "127.0.0.1:70000"}, "etcd.host: port '70000'"),
        ({"scope": 42, "host": "h"}, "etcd.scope: expected a string, got int"),
        ({"scope": "a/b", "host": "h"}, "etcd.scope: 'a/b' must be a non-empty name"),
        ({"host": "h"}, "etcd.scope: missing"),
        ({"scope": "s"}, "etcd.hosts: missing"),
        ({"scope": "s", "host": "h", "ttl": "thirty"}, "etcd.ttl: expected a number, got str"),
        ({"scope": "s", "host": "h", "ttl": -1}, "etcd.ttl: must be positive"),
        ({"scope": "s", "host": "h", "protocol": "gopher"}, "etcd.protocol: 'gopher' is neither http nor https"),
        ({"scope": "s", "host": "h", "username": "u"}, "etcd.username and etcd.password: give both or neither"),
        ({"scope": "s", "host": "h", "hots": ["h"]}, "etcd.hots: unknown setting (did you mean 'hosts'?)"),
        ({"scope": "s", "hosts": ["h:1", 7]}, "etcd.hosts: 7 is not a host:port string"),
        ("127.0.0.1:2379", "etcd: must be a mapping, got str"),
    ],
)
def test_a_bad_etcd_section_names_the_setting(section, message):
    with pytest.raises(DcsConfigError) as raised:
        etcd_settings(section)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"scope": "s", "hosts": "h:2181", "session_timeout": True}, "zookeeper.session_timeout: expected a number"),
        ({"scope": "s", "hosts": []}, "zookeeper.hosts: empty"),
        ({"scope": "s", "exhibitor": {"port": 8181}}, "zookeeper.exhibitor.hosts: missing"),
        ({"scope": "s", "exhibitor": {"port": 0, "hosts": ["e"]}}, "zookeeper.exhibitor.port: 0 is not a port"),
        ({"scope": "s", "exhibitor": "e1:8181"}, "zookeeper.exhibitor: must be a mapping"),
        ({"scope": "s", "hosts": ["h"], "exhibitor": {"hosts": ["e"], "poll": 1}}, "zookeeper.exhibitor.poll:"),
    ],
)
def test_a_bad_zookeeper_section_names_the_setting(section, message):
    with pytest.raises(DcsConfigError) as raised:
        zookeeper_settings(section)
    assert message in str(raised.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(DcsConfigError) as raised:
        etcd_settings({"host": "h:x", "ttl": 0})
    assert len(raised.value.problems) == 3  # scope missing, bad port, ttl not positive


@pytest.mark.parametrize("config", [{}, {"etcd": {}, "zookeeper": {}}])
def test_exactly_one_dcs_section(config):
    with pytest.raises(DcsConfigError, match="configure exactly one DCS section"):
        settings_from(config)


def test_ipv6_hosts():
    assert parse_host("[::1]:2379", 1, "etcd.host") == ("::1", 2379)
    assert parse_host("[::1]", 2181, "zookeeper.hosts") == ("::1", 2181)
