"""Text sources: paths, stdin, TCP and plugin schemes, read as bytes arrive and decoded as UTF-8.

A source is a string: a path; `-` (stdin); `tcp://HOST:PORT` (connect, read until the peer closes);
`file://PATH`; or `SCHEME://...` for any scheme a plugin registers in the `charstream.sources` entry
point group (see `charstream.plugins`). `open_source` turns one into an iterable of str; `Listener`
accepts TCP connections one after another and reads each in turn.

Byte sources are decoded incrementally, so a character split across two reads or two packets
arrives whole. Bytes that are not UTF-8 are replaced by U+FFFD; the first such byte of each source
(each connection) is reported once, with its byte offset, as a CharstreamWarning. A stream that
ends in the middle of a character (a peer closing mid-character) ends with one U+FFFD, reported
the same way. A source that does not look like text is
refused with a CharstreamError: a NUL byte in its first SNIFF bytes (as git and grep decide that a
file is binary), or more than MAX_INVALID of those bytes not UTF-8 (another encoding, or binary).
Later NULs are characters like any other.

The modules, one job each: `decode` (UTF-8 decoding and binary sniffing), `files` (files and
stdin), `tcp` (connect and listen), `dispatch` (source strings and plugin schemes), `streams`
(background reading with idle callbacks, character limits, repeats).
"""
from .decode import BLOCK, MAX_INVALID, SNIFF, TextSniffer, Utf8Decoder, read_stream
from .dispatch import chain_sources, check_source, open_source, scheme_of
from .files import check_path, file_path, open_file, path_of, read_path
from .streams import limit_chars, repeat_sources, with_idle
from .tcp import CONNECT_TIMEOUT, Listener, open_tcp, parse_address

__all__ = ["BLOCK", "CONNECT_TIMEOUT", "MAX_INVALID", "SNIFF", "Listener", "TextSniffer", "Utf8Decoder",
           "chain_sources", "check_path", "check_source", "file_path", "limit_chars", "open_file",
           "open_source", "open_tcp", "parse_address", "path_of", "read_path", "read_stream",
           "repeat_sources", "scheme_of", "with_idle"]
