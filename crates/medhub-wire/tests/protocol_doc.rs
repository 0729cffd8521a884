//! `docs/protocol.md` is the contract a client author works from: its examples must parse as
//! the server's frame types, and its error table must list every code with its status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use medhub_wire::{ClientFrame, ErrorCode, ServerFrame};

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md")).expect("docs/protocol.md")
}

/// The fenced blocks whose info string is exactly `lang`.
fn blocks(doc: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match &mut current {
            None if line.trim() == format!("```{lang}") => current = Some(String::new()),
            Some(buf) if line.trim() == "```" => {
                out.push(std::mem::take(buf));
                current = None;
            }
            Some(buf) => {
                buf.push_str(line);
                buf.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn every_client_example_parses_and_round_trips() {
    let examples = blocks(&doc(), "json client-frame");
    assert!(examples.len() >= 9, "found {} client examples", examples.len());
    let mut seen = std::collections::BTreeSet::new();
    for ex in examples {
        let frame: ClientFrame = serde_json::from_str(&ex).unwrap_or_else(|e| panic!("{e}: {ex}"));
        let v: serde_json::Value = serde_json::from_str(&ex).unwrap();
        seen.insert(v["type"].as_str().unwrap().to_owned());
        // What we document is what the server would produce for the same frame.
        assert_eq!(serde_json::to_value(&frame).unwrap()["type"], v["type"]);
    }
    for ty in ["hello", "send", "edit", "recall", "receipt", "ack", "typing", "presence_subscribe", "ping"] {
        assert!(seen.contains(ty), "no example of client frame {ty}");
    }
}

#[test]
fn every_server_example_parses_as_a_server_frame() {
    let examples = blocks(&doc(), "json server-frame");
    let mut kinds = std::collections::BTreeSet::new();
    for ex in examples {
        let frame: ServerFrame = serde_json::from_str(&ex).unwrap_or_else(|e| panic!("{e}: {ex}"));
        // Re-serializing loses nothing the example shows.
        let back = serde_json::to_value(&frame).unwrap();
        let orig: serde_json::Value = serde_json::from_str(&ex).unwrap();
        for (k, v) in orig.as_object().unwrap() {
            assert_eq!(&back[k], v, "field {k} of {ex}");
        }
        if let Some(kind) = orig["kind"].as_str() {
            kinds.insert(kind.to_owned());
        }
    }
    for k in [
        "message.created",
        "message.edited",
        "message.acknowledged",
        "receipt.updated",
        "member.added",
        "conversation.created",
    ] {
        assert!(kinds.contains(k), "no example of event {k}");
    }
}

#[test]
fn the_error_table_lists_every_code_with_its_status() {
    let doc = doc();
    for code in ErrorCode::ALL {
        let row = format!("| `{}` | {} |", code.as_str(), code.status());
        assert!(doc.contains(&row), "docs/protocol.md lacks the row {row}");
    }
}

#[test]
fn the_request_table_matches_the_frame_declarations() {
    let doc = doc();
    let pairs = [
        ("hello", Some("ready")),
        ("send", Some("sent")),
        ("edit", Some("edited")),
        ("recall", Some("recalled")),
        ("receipt", Some("receipt_saved")),
        ("ack", Some("acked")),
        ("typing", None),
        ("presence_subscribe", Some("presence_state")),
        ("ping", Some("pong")),
    ];
    for ex in blocks(&doc, "json client-frame") {
        let frame: ClientFrame = serde_json::from_str(&ex).unwrap();
        let v: serde_json::Value = serde_json::from_str(&ex).unwrap();
        let ty = v["type"].as_str().unwrap();
        let want = pairs.iter().find(|(t, _)| *t == ty).map(|(_, r)| *r).unwrap();
        assert_eq!(frame.reply(), want, "{ty}");
        let row = match want {
            Some(r) => format!("| `{ty}` | `{r}` |"),
            None => format!("| `{ty}` | *(none)* |"),
        };
        assert!(doc.contains(&row), "docs/protocol.md lacks the row {row}");
    }
}
