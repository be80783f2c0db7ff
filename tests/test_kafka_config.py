"""supervisord-kafka.conf is supervisord.conf with several detector workers: nothing else may drift."""

from __future__ import annotations

import configparser

from lib.config import PROJECT_ROOT


def _sections(name: str) -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser()
    parser.read(PROJECT_ROOT / name)
    return {s: dict(parser.items(s)) for s in parser.sections()}


def test_kafka_supervisor_config_differs_only_by_detector_workers():
    plain, kafka = _sections("supervisord.conf"), _sections("supervisord-kafka.conf")
    assert set(plain) == set(kafka), "supervisord-kafka.conf must have the same programs as supervisord.conf"
    for section in plain:
        if section == "program:detector":
            extra = {k: v for k, v in kafka[section].items() if plain[section].get(k) != v}
            assert set(extra) == {"numprocs", "process_name"}, extra
            assert int(kafka[section]["numprocs"]) >= 2
        else:
            assert plain[section] == kafka[section], f"[{section}] differs: mirror supervisord.conf's change"
