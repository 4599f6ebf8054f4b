import io

from slm_pipeline.core.jsonl import EXCERPT_BYTES, iter_lines


def test_oversized_lines_are_skipped_in_bounded_memory_and_numbering_goes_on():
    big = b"y" * 50_000
    stream = io.BytesIO(b"a\r\n" + big + b"\nb\n\n" + big)
    lines = list(iter_lines(stream, max_bytes=1000))
    assert [(l.number, l.oversized, l.size) for l in lines] == [
        (1, False, 1), (2, True, 50_000), (3, False, 1), (4, False, 0), (5, True, 50_000)
    ]
    assert lines[0].data == b"a" and lines[2].data == b"b"
    assert 0 < len(lines[1].data) <= EXCERPT_BYTES and big.startswith(lines[1].data)
    assert [l.offset for l in lines[:3]] == [0, 3, 50_004]


def test_a_line_of_exactly_the_limit_is_kept():
    [line] = list(iter_lines(io.BytesIO(b"z" * 100 + b"\n"), max_bytes=100))
    assert not line.oversized and line.size == 100
