"""HTTP/2 pieces of the gRPC protocol: header blocks read (reused only while right) and checked, frames written."""

from __future__ import annotations

from deferred_emulator import h2frames as h2
from deferred_emulator.h2fields import HeaderReader, request_problem
from hpack import Decoder, Encoder

CALL = [(b":method", b"POST"), (b":path", b"/google.cloud.tasks.v2.CloudTasks/CreateTask"), (b"te", b"trailers")]


class Reference:
    """A plain hpack decoder fed the same blocks: what each block must read as."""

    def __init__(self) -> None:
        self.decoder = Decoder()

    def read(self, block: bytes) -> dict[bytes, bytes]:
        return {bytes(n): bytes(v) for n, v in self.decoder.decode(block, raw=True)}


def test_a_repeated_block_is_read_once_until_the_table_changes() -> None:
    encoder, reader, reference = Encoder(), HeaderReader(), Reference()
    first = encoder.encode(CALL)  # indexes its literals: the table grows
    assert reader.read(first).headers == reference.read(first) == dict(CALL)
    assert reader.last is None  # a block that changed the table is not kept
    warm = encoder.encode(CALL)  # every field indexed now: the very same block on every call
    assert warm == encoder.encode(CALL)
    headers = reader.read(warm).headers
    assert headers == reference.read(warm) == dict(CALL)
    assert reader.read(warm).headers is headers  # read once
    reference.read(warm)
    # Another block adds an entry: the indices of ``warm`` now name other entries
    other = encoder.encode([(b"x-new", b"1")])
    assert reader.read(other).headers == reference.read(other) == {b"x-new": b"1"}
    again = reader.read(warm).headers
    assert again is not headers
    assert again == reference.read(warm)
    assert again != dict(CALL)  # the same bytes, read against the new table


def test_a_block_that_indexes_is_read_every_time() -> None:
    encoder, reader, reference = Encoder(), HeaderReader(), Reference()
    encoder.header_table_size = 4096
    blocks = [encoder.encode([(b"grpc-timeout", f"{n}m".encode())]) for n in range(5)]
    for block in blocks * 2:  # the second round's blocks name entries that have moved since
        assert reader.read(block).headers == reference.read(block)


GOOD = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/p.S/M"), (b":authority", b"h")]
GOOD.append((b"te", b"trailers"))


def test_well_formed_requests_pass_and_malformed_ones_say_why() -> None:
    assert request_problem(GOOD) is None
    assert request_problem([*GOOD, (b"grpc-timeout", b"5S"), (b"x-bin", b"a b")]) is None
    cases = {
        "a pseudo-header after a regular field": [*GOOD[:2], (b"te", b"trailers"), *GOOD[2:4]],
        "the pseudo-header :status in a request": [(b":status", b"200"), *GOOD],
        ":path twice": [*GOOD[:3], (b":path", b"/other"), *GOOD[3:]],
        "no :scheme": [field for field in GOOD if field[0] != b":scheme"],
        "a malformed :path": [(n, b"" if n == b":path" else v) for n, v in GOOD],
        "the field name 'X-Upper'": [*GOOD, (b"X-Upper", b"1")],
        "the field name 'a b'": [*GOOD, (b"a b", b"1")],
        "a malformed value of x-crlf": [*GOOD, (b"x-crlf", b"a\r\nb")],
        "a malformed value of x-space": [*GOOD, (b"x-space", b" padded")],
        "the connection-specific field keep-alive": [*GOOD, (b"keep-alive", b"5")],
        "TE other than trailers": [(n, b"gzip" if n == b"te" else v) for n, v in GOOD],
    }
    assert {why: request_problem(fields) for why, fields in cases.items()} == {why: why for why in cases}


def test_our_header_blocks_leave_the_clients_table_alone() -> None:
    decoder = Decoder()
    ok = h2.header_block([(b":status", b"200"), (b"content-type", b"application/grpc")])
    decoder.decode(ok, raw=True)
    decoder.decode(h2.header_block([(b"grpc-status", b"5"), (b"grpc-message", b"not found")]), raw=True)
    assert len(decoder.header_table.dynamic_entries) == 0
    assert dict(decoder.decode(ok, raw=True)) == {b":status": b"200", b"content-type": b"application/grpc"}


def test_frames_and_padding() -> None:
    frame = h2.frame(h2.PING, h2.ACK, 0, b"12345678")
    length_kind, flags, stream = h2.HEAD.unpack_from(frame)
    assert (length_kind >> 8, length_kind & 0xFF, flags, stream) == (8, h2.PING, h2.ACK, 0)
    assert frame[9:] == b"12345678"
    assert h2.strip_padding(h2.PADDED, b"\x02abcXY") == b"abc"
    assert h2.strip_padding(0, b"\x02abc") == b"\x02abc"
    assert h2.strip_padding(h2.PADDED, b"\x05ab") is None  # padding longer than the frame
    assert h2.strip_padding(h2.PADDED, b"") is None
