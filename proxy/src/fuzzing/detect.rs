//! Protocol detection and the tunnel preamble, over reads that arrive in small chunks: the
//! verdict never depends on how the bytes were split, the bytes handed on are exactly the ones
//! read, and nothing panics.

use std::io;
use std::time::Duration;

use super::chunked::{block_on, Chunked};
use crate::net::detect::{classify, detect, first_mover, Detected, FirstMove, Outcome, H2_PREFACE};
use crate::net::relay::read_preamble;
use weft_proto::contract::TCP_PREAMBLE_MAGIC;

const FIRST_BYTE: Duration = Duration::from_millis(300);
const READ: Duration = Duration::from_secs(30);

/// What detection concluded, comparable across runs (errors by kind).
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Known(Detected),
    Silent,
    Failed(io::ErrorKind),
}

fn run(stream: &[u8], reader: Chunked<'_>, declared_http: bool) -> Verdict {
    let mut reader = reader;
    let first_byte = (!declared_http).then_some(FIRST_BYTE);
    match block_on(detect(&mut reader, first_byte, READ)) {
        Ok(Outcome::Known(d, prefix)) => {
            assert!(prefix.len() <= H2_PREFACE.len(), "read past the preface's length: {prefix:?}");
            assert_eq!(&prefix[..], &stream[..prefix.len()], "the replayed bytes are not the ones read");
            let c = classify(&prefix);
            if declared_http && d == Detected::Http1 {
                assert!(matches!(c, Some(Detected::Http1 | Detected::Opaque)), "{c:?} for {prefix:?}");
            } else if prefix.is_empty() {
                assert_eq!(d, Detected::Opaque, "only a client that closed at once is empty");
            } else {
                assert_eq!(c, Some(d), "detected {d:?} but the bytes say {c:?}: {prefix:?}");
            }
            assert!(!(declared_http && d == Detected::Opaque), "a declared HTTP service went opaque");
            Verdict::Known(d)
        }
        Ok(Outcome::Silent) => {
            assert!(!declared_http && stream.is_empty(), "silent although the client spoke");
            Verdict::Silent
        }
        Err(e) => Verdict::Failed(e.kind()),
    }
}

/// Input: a flags byte (bit 0: service declared HTTP; bit 1: the client closes after its bytes,
/// else it goes silent), a chunk-pattern byte, then the client's bytes.
pub fn check(data: &[u8]) {
    let [flags, pattern, stream @ ..] = data else { return };
    let declared_http = flags & 1 != 0;
    let eof = flags & 2 != 0;
    let whole = run(stream, Chunked::whole(stream, eof), declared_http);
    let chunked = run(stream, Chunked::new(stream, *pattern, eof), declared_http);
    assert_eq!(whole, chunked, "the verdict depends on how the bytes were split: {stream:?}");

    // After silence, the client speaks first (the server stays silent): the same bytes decide.
    let mut client = Chunked::new(stream, *pattern, true);
    let mut server = Chunked::new(&[], 0, false);
    match block_on(first_mover(&mut client, &mut server)) {
        Ok(FirstMove::Client(d, held)) => {
            assert_eq!(&held[..], &stream[..held.len()], "held bytes differ from the client's");
            match classify(&held) {
                Some(c) => assert_eq!(c, d, "{held:?}"),
                // The client closed before its bytes decided anything: opaque, bytes passed on.
                None => assert_eq!((d, held.len()), (Detected::Opaque, stream.len())),
            }
        }
        Ok(FirstMove::Server(b)) => panic!("a silent server spoke: {b:?}"),
        Err(e) => panic!("reading from memory failed: {e}"),
    }
}

/// Input: a chunk-pattern byte, then what a peer sends on a tunnel. The preamble is accepted
/// exactly when it starts with the magic, and names the port the two bytes after it say.
pub fn check_preamble(data: &[u8]) {
    let [pattern, stream @ ..] = data else { return };
    let mut reader = Chunked::new(stream, *pattern, true);
    let got = block_on(read_preamble(&mut reader, Duration::from_secs(5)));
    match got {
        Ok(port) => {
            assert!(stream.len() >= 6 && stream[..4] == TCP_PREAMBLE_MAGIC[..], "accepted {stream:?}");
            assert_eq!(port, u16::from_be_bytes([stream[4], stream[5]]));
        }
        Err(e) => assert!(
            stream.len() < 6 || stream[..4] != TCP_PREAMBLE_MAGIC[..],
            "refused a well-formed preamble ({e}): {stream:?}"
        ),
    }
}
