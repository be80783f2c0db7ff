"""A distinct marker per algorithm that stays readable where several flag one reading: its own
shape, colour and size, opaque and nested (largest under), never a blend; a ring where every
algorithm of the sensor agrees, with its legend entry."""

from datetime import datetime, timedelta

import pandas as pd

from lib.page import charts

T0 = datetime(2026, 11, 30, 13, 51)


def marks() -> pd.DataFrame:
    rows = [(0, "dbscan"), (0, "iforest"), (0, "rule:range"), (1, "iforest"), (2, "dbscan"), (2, "iforest")]
    df = pd.DataFrame(
        {
            "ts": [T0 + timedelta(seconds=s) for s, _ in rows],
            "value": [90.0, 90.0, 90.0, 10.0, 80.0, 80.0],
            "detector": [d for _, d in rows],
            "score": 0.9,
            "session_id": "s1",
            "seq": [s for s, _ in rows],
        }
    )
    df["flagged_by"] = df.groupby("seq")["detector"].transform(lambda d: ", ".join(sorted(d)))
    return df


def spec(layer) -> dict:
    return layer.to_dict()


def test_each_algorithm_has_its_own_shape_colour_and_size_and_none_is_blended():
    style = charts.detector_style(["iforest", "dbscan", "rule:range", "cusum"])
    assert len({c for c, _, _ in style.values()}) == len({s for _, s, _ in style.values()}) == 4
    assert [size for _, _, size in style.values()] == sorted((size for _, _, size in style.values()), reverse=True)
    points = spec(charts.marker_layers(marks(), charts.UTC_CLOCK, detectors=("cusum",))[0])
    assert points["mark"]["opacity"] == 1.0 and points["mark"]["filled"] and points["mark"]["stroke"] == "white"
    enc = points["encoding"]
    assert enc["color"]["scale"]["domain"] == ["cusum", "dbscan", "iforest", "rule:range"]
    assert enc["order"]["field"] == "rank" and enc["size"]["field"] == "size"
    # the same algorithm looks the same on a chart where fewer flagged
    alone = spec(
        charts.marker_layers(
            marks()[marks()["detector"] == "iforest"], charts.UTC_CLOCK, detectors=("cusum", "dbscan", "rule:range")
        )[0]
    )
    assert alone["encoding"]["color"]["scale"] == enc["color"]["scale"]


def test_a_ring_marks_where_every_algorithm_of_the_sensor_agrees():
    layers = charts.marker_layers(marks(), charts.UTC_CLOCK, agree_among=("dbscan", "iforest"))
    assert len(layers) == 2
    ring = spec(layers[1])
    assert ring["mark"]["filled"] is False
    data = next(iter(ring["datasets"].values()))
    assert sorted(row["seq"] for row in data) == [0, 2] and {row["detector"] for row in data} == {charts.ALL_AGREE}
    assert charts.ALL_AGREE in ring["encoding"]["color"]["scale"]["domain"]
    # one algorithm alone cannot "agree": no ring, no legend entry
    only = charts.marker_layers(marks(), charts.UTC_CLOCK, agree_among=("dbscan",))
    assert len(only) == 1 and charts.ALL_AGREE not in spec(only[0])["encoding"]["color"]["scale"]["domain"]
