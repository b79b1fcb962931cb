//! A streamed answer read as it passes to the client: its server-sent events are passed on
//! whole (an event split across chunks waits for its end), the provider's token usage is
//! taken from the event that reports it, and output pieces are counted.
//!
//! kroute asks a priced provider for that usage event (`stream_options.include_usage`) so
//! that streamed answers are charged like full ones; when the client did not ask for it
//! itself, the event (one with an empty `choices`) is dropped from the client's stream.

use axum::body::Bytes;
use serde_json::Value;

/// An event longer than this is not waited for: what has come is passed on unread.
const MAX_EVENT_BYTES: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct StreamTap {
    /// The start of an event whose end has not arrived.
    pending: Vec<u8>,
    drop_usage_event: bool,
    /// `(prompt_tokens, completion_tokens)` as the provider reported them.
    pub usage: Option<(u64, u64)>,
    /// Events that carried output text.
    pub pieces: u64,
}

impl StreamTap {
    pub fn new(drop_usage_event: bool) -> Self {
        Self {
            drop_usage_event,
            ..Self::default()
        }
    }

    /// The whole events that `chunk` completes, to pass on.
    pub fn pass(&mut self, chunk: &[u8]) -> Bytes {
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(pending.len());
        let mut start = 0;
        while let Some(length) = event_length(&pending[start..]) {
            let event = &pending[start..start + length];
            if self.read(event) {
                out.extend_from_slice(event);
            }
            start += length;
        }
        pending.drain(..start);
        match pending.len() > MAX_EVENT_BYTES {
            true => out.append(&mut pending),
            false => self.pending = pending,
        }
        Bytes::from(out)
    }

    /// What is left when the stream ends (an unterminated last event), passed on as is.
    pub fn rest(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.pending))
    }

    /// Takes what the event tells; false for an event the client should not see.
    fn read(&mut self, event: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(event) else {
            return true;
        };
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let Ok(data) = serde_json::from_str::<Value>(data.trim()) else {
                continue;
            };
            if let Some(usage) = data.get("usage").and_then(tokens) {
                self.usage = Some(usage);
            }
            let choices = data.get("choices").and_then(Value::as_array);
            let has_text = |choice: &Value| {
                choice["delta"]["content"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty())
            };
            if choices.is_some_and(|c| c.iter().any(has_text)) {
                self.pieces += 1;
            }
            let usage_only = choices.is_some_and(Vec::is_empty) && data.get("usage").is_some();
            if usage_only && self.drop_usage_event {
                return false;
            }
        }
        true
    }
}

/// `prompt_tokens` and `completion_tokens` of a `usage` object.
pub fn tokens(usage: &Value) -> Option<(u64, u64)> {
    Some((
        usage.get("prompt_tokens")?.as_u64()?,
        usage.get("completion_tokens")?.as_u64()?,
    ))
}

/// The length of the first whole event in `bytes` with its blank line, if it has ended.
fn event_length(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        for end in [&b"\n\n"[..], b"\r\n\r\n", b"\r\r"] {
            if rest.starts_with(end) {
                return Some(i + end.len());
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECE: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
    const USAGE: &str =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    #[test]
    fn events_split_across_chunks_pass_whole() {
        let mut tap = StreamTap::new(false);
        let all = format!("{PIECE}{PIECE}{USAGE}{DONE}");
        let (a, b) = all.split_at(PIECE.len() + 7);
        let first = tap.pass(a.as_bytes());
        assert_eq!(first, PIECE.as_bytes());
        let second = tap.pass(b.as_bytes());
        assert_eq!([first, second].concat(), all.as_bytes());
        assert_eq!(tap.rest(), Bytes::new());
        assert_eq!((tap.usage, tap.pieces), (Some((12, 3)), 2));
    }

    #[test]
    fn the_usage_event_kroute_asked_for_is_dropped() {
        let mut tap = StreamTap::new(true);
        let out = tap.pass(format!("{PIECE}{USAGE}{DONE}").as_bytes());
        assert_eq!(out, format!("{PIECE}{DONE}").as_bytes());
        assert_eq!(tap.usage, Some((12, 3)));
    }

    #[test]
    fn crlf_events_and_an_unterminated_tail() {
        let mut tap = StreamTap::new(false);
        let out = tap.pass(b"data: {\"choices\":[]}\r\n\r\ndata: [DO");
        assert_eq!(out, &b"data: {\"choices\":[]}\r\n\r\n"[..]);
        assert_eq!(tap.rest(), &b"data: [DO"[..]);
    }
}
