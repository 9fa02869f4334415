//! A minimal `text/event-stream` parser (the WHATWG rules the MCP transports rely on):
//! `event:`, `data:` (several lines joined with `\n`) and `id:` fields, `:` comments,
//! events dispatched at a blank line; CRLF, LF and CR line ends.

/// One event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field (`message` when absent, as the spec says).
    pub(crate) event: String,
    /// The `data:` lines joined with `\n`.
    pub(crate) data: String,
    /// The `id:` field.
    pub(crate) id: Option<String>,
}

/// Incremental parser: feed bytes with [`SseParser::push`].
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
    id: Option<String>,
    saw_cr: bool,
}

impl SseParser {
    /// Feed bytes; returns the events completed by them.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.saw_cr {
                self.saw_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => {
                    self.saw_cr = true;
                    self.line(&mut out);
                }
                b'\n' => self.line(&mut out),
                _ => self.buf.push(b),
            }
        }
        out
    }

    /// End of stream: an event without its blank line is still returned (leniently).
    pub(crate) fn finish(&mut self) -> Option<SseEvent> {
        let mut out = Vec::new();
        if !self.buf.is_empty() {
            self.line(&mut out);
        }
        self.dispatch(&mut out);
        out.pop()
    }

    fn line(&mut self, out: &mut Vec<SseEvent>) {
        let line = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        let id = self.id.take();
        if self.data.is_empty() && event.is_none() {
            return;
        }
        let data = std::mem::take(&mut self.data).join("\n");
        out.push(SseEvent {
            event: event
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "message".to_owned()),
            data,
            id,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b": comment\r\nevent: endp").is_empty());
        let events = p.push(b"oint\r\ndata: /messages?sessionId=abc\r\n\r\ndata: a\ndata:b\n\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "endpoint".into(),
                    data: "/messages?sessionId=abc".into(),
                    id: None
                },
                SseEvent {
                    event: "message".into(),
                    data: "a\nb".into(),
                    id: None
                }
            ]
        );
        assert!(p.push(b"id: 7\ndata: {}").is_empty());
        assert_eq!(
            p.finish(),
            Some(SseEvent {
                event: "message".into(),
                data: "{}".into(),
                id: Some("7".into())
            })
        );
    }

    #[test]
    fn cr_line_ends() {
        let mut p = SseParser::default();
        let events = p.push(b"data: x\r\r");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "x");
    }
}
