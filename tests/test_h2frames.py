"""HTTP/2 pieces of the gRPC protocol: header blocks read (and reused only while that is right), frames written."""

from __future__ import annotations

from deferred_emulator import h2frames as h2
from hpack import Decoder, Encoder

CALL = [(b":method", b"POST"), (b":path", b"/google.cloud.tasks.v2.CloudTasks/CreateTask"), (b"te", b"trailers")]


class Reference:
    """A plain hpack decoder fed the same blocks: what each block must read as."""

    def __init__(self) -> None:
        self.decoder = Decoder()

    def read(self, block: bytes) -> dict[bytes, bytes]:
        return {bytes(n): bytes(v) for n, v in self.decoder.decode(block, raw=True)}


def test_a_repeated_block_is_read_once_until_the_table_changes() -> None:
    encoder, reader, reference = Encoder(), h2.HeaderReader(), Reference()
    first = encoder.encode(CALL)  # indexes its literals: the table grows
    assert reader.read(first) == reference.read(first) == dict(CALL)
    assert reader.last is None  # a block that changed the table is not kept
    warm = encoder.encode(CALL)  # every field indexed now: the very same block on every call
    assert warm == encoder.encode(CALL)
    headers = reader.read(warm)
    assert headers == reference.read(warm) == dict(CALL)
    assert reader.read(warm) is headers  # read once
    reference.read(warm)
    # Another block adds an entry: the indices of ``warm`` now name other entries
    other = encoder.encode([(b"x-new", b"1")])
    assert reader.read(other) == reference.read(other) == {b"x-new": b"1"}
    again = reader.read(warm)
    assert again is not headers
    assert again == reference.read(warm)
    assert again != dict(CALL)  # the same bytes, read against the new table


def test_a_block_that_indexes_is_read_every_time() -> None:
    encoder, reader, reference = Encoder(), h2.HeaderReader(), Reference()
    encoder.header_table_size = 4096
    blocks = [encoder.encode([(b"grpc-timeout", f"{n}m".encode())]) for n in range(5)]
    for block in blocks * 2:  # the second round's blocks name entries that have moved since
        assert reader.read(block) == reference.read(block)


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
