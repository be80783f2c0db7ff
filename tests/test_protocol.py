"""The line protocol: split at the last `!`, strip `\\r\\n`, reject with a reason, never raise."""

import pytest

from lib.ingest import protocol
from lib.ingest.protocol import Parsed, Rejected, parse_line


@pytest.mark.parametrize(
    "line, expected",
    [
        # The original program's examples: `humidite!42.7` with the board's \r\n.
        (b"humidite!42.7\r\n", Parsed("humidite", 42.7)),
        (b"humidite!42.7", Parsed("humidite", 42.7)),
        (b"temperature!21.5\n", Parsed("temperature", 21.5)),
        (b"  pression!1013.25 \r\n", Parsed("pression", 1013.25)),
        (b"humidite!42,7\r\n", Parsed("humidite", 42.7)),  # French decimal comma
        (b"t!-3\r\n", Parsed("t", -3.0)),
        (b"t!1e3", Parsed("t", 1000.0)),
        (b"capteur.salle-1_a!0.5", Parsed("capteur.salle-1_a", 0.5)),
    ],
)
def test_good_lines(line, expected):
    assert parse_line(line) == expected


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"humidite 42.7\r\n", protocol.NO_SEPARATOR),
        (b"!42.7", protocol.EMPTY_TOPIC),
        (b"humidite!", protocol.EMPTY_VALUE),
        (b"humidite!abc", protocol.NOT_A_NUMBER),
        (b"humidite!42.7.1", protocol.NOT_A_NUMBER),
        (b"humidite!nan", protocol.NOT_FINITE),
        (b"humidite!inf", protocol.NOT_FINITE),
        (b"humidite!1e999", protocol.NOT_FINITE),
        (b"hum idite!4", protocol.BAD_TOPIC),
        (b"a!b!3", protocol.BAD_TOPIC),  # split at the LAST "!": topic "a!b" is not a name
        (b"_vigie.states!3", protocol.RESERVED_TOPIC),
        (b"humidit\xe9!42", protocol.BAD_UTF8),
        (b"x" * 600 + b"!1", protocol.TOO_LONG),
    ],
)
def test_rejected_lines_say_why(line, reason):
    result = parse_line(line)
    assert isinstance(result, Rejected)
    assert result.reason == reason


def test_split_is_at_the_last_separator():
    # The original program's separateur_serial walks back from the end: the value follows the last "!".
    assert parse_line(b"a!b!3").raw == "a!b!3"
    assert protocol.parse_value("3") == 3.0
    assert parse_line(b"ab!!3").reason == protocol.BAD_TOPIC


def test_raw_bytes_are_escaped_for_storage():
    r = parse_line(b"\x00\xffbad\\line")
    assert r.raw == "\\x00\\xffbad\\x5cline"
    assert r.raw.isascii() and r.raw.isprintable()


def test_format_line_round_trips():
    assert parse_line(protocol.format_line("humidite", 42.7)) == Parsed("humidite", 42.7)


# -- properties (hypothesis) --------------------------------------------------------------------
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

TOPICS = st.from_regex(protocol.TOPIC_RE, fullmatch=True).filter(lambda t: protocol.valid_topic(t) is None)
VALUES = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=700))
@example(b"a!1\xff")
@example(b"!" * 600)
@example(b"\r\n")
def test_any_bytes_give_a_reading_or_a_reject_never_an_exception(data):
    result = parse_line(data)
    if isinstance(result, Parsed):
        assert protocol.valid_topic(result.sensor) is None
        assert result.value == result.value and abs(result.value) != float("inf")
    else:
        assert isinstance(result, Rejected)
        assert result.reason in protocol.REASONS
        assert result.raw.isascii() and result.raw.isprintable()


@settings(max_examples=300, deadline=None)
@given(TOPICS, VALUES, st.sampled_from([b"\r\n", b"\n", b""]), st.sampled_from(["", " ", "\t"]))
def test_round_trip_of_valid_lines(topic, value, end, pad):
    line = f"{pad}{topic}!{value!r}{pad}".encode() + end
    assert parse_line(line) == Parsed(topic, value), line


@settings(max_examples=150, deadline=None)
@given(TOPICS, st.integers(-(10**6), 10**6), st.integers(0, 10**4))
def test_decimal_comma_reads_as_a_point(topic, whole, frac):
    assert parse_line(f"{topic}!{whole},{frac}".encode()) == parse_line(f"{topic}!{whole}.{frac}".encode())


@settings(max_examples=100, deadline=None)
@given(TOPICS, VALUES)
def test_split_at_the_last_separator_keeps_every_earlier_one_in_the_topic(topic, value):
    result = parse_line(f"{topic}!{topic}!{value!r}".encode())
    assert isinstance(result, Rejected) and result.reason == protocol.BAD_TOPIC


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), max_size=20))
def test_line_splitter_gives_the_same_lines_however_the_bytes_arrive(data, cuts):
    from lib.ingest.serial_port import LineSplitter

    whole = LineSplitter(512).feed(data)
    splitter, pos, pieces = LineSplitter(512), 0, []
    for n in cuts:
        pieces += splitter.feed(data[pos : pos + n])
        pos += n
    pieces += splitter.feed(data[pos:])
    assert pieces == whole
    assert all(len(line) <= 512 or too_long for line, too_long in whole)
    assert len(whole) == data.count(b"\n")
