//! The PROXY protocol header (`proxy::proxy_protocol`): `read_header` over the input delivered
//! in fuzzer-chosen pieces, and `parse_v1` / `parse_v2` on the raw bytes.
//!
//! Property: the address read and the bytes left unread (the client's request, which must not
//! be touched) are the same however the bytes arrive; a header that reads never consumed more
//! than the header.

use portcullis_dataplane::proxy::proxy_protocol::{parse_v1, parse_v2, read_header};

use crate::input::{Input, Scripted, pieces};

pub fn run(data: &[u8]) {
    let _ = parse_v1(data);
    if let Some((head, body)) = data.split_first_chunk::<4>() {
        let _ = parse_v2(*head, body);
    }
    let mut input = Input(data);
    let cuts = input.cuts(6);
    let bytes = input.rest();
    let whole = read(&[bytes]);
    let split = read(&pieces(bytes, &cuts));
    assert_eq!(split, whole, "the header reads differently when split");
    if let (Ok(_), unread) = &whole {
        assert!(
            bytes.ends_with(unread),
            "what is left is not the end of the input"
        );
    }
}

type Read = (Result<Option<std::net::SocketAddr>, String>, Vec<u8>);

fn read(pieces: &[&[u8]]) -> Read {
    crate::block_on(async {
        let mut peer = Scripted::new(pieces);
        let got = read_header(&mut peer).await;
        (got, peer.unread())
    })
}
