//! Every close code the server uses is documented in docs/protocol.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use medhub_api::close;

#[test]
fn every_close_code_is_in_the_protocol_page() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md")).unwrap();
    for code in [
        close::GOING_AWAY,
        close::PROTOCOL_ERROR,
        close::INVALID_PAYLOAD,
        close::TOO_BIG,
        close::INTERNAL,
        close::UNAUTHENTICATED,
        close::SESSION_ENDED,
        close::SLOW_CONSUMER,
        close::HEARTBEAT_TIMEOUT,
        close::RESYNC_REQUIRED,
        close::FLOOD,
    ] {
        assert!(doc.contains(&format!("\n| {code} |")), "close code {code} is not documented");
    }
}
