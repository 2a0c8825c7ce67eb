//! Prometheus text exposition (format 0.0.4), and the
//! tiny HTTP/1.0 responder that serves it from the event loop. Anything
//! but `GET /metrics` gets a 404; one response per connection.

use std::fmt::Write as _;

/// Builds an exposition, one metric family at a time.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

/// Prometheus metric type.
#[derive(Clone, Copy)]
pub enum Kind {
    /// Only ever grows.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Exposition {
    /// Starts family `name`.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let k = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {k}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Label value escaping: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The HTTP response for a request whose head is `head`; `body` is called
/// only for `GET /metrics`.
pub fn respond(head: &str, body: impl FnOnce() -> String) -> Vec<u8> {
    let first = head.lines().next().unwrap_or("");
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, text) = if method == "GET" && (path == "/metrics" || path == "/") {
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body())
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "ferry serves GET /metrics\n".to_string(),
        )
    };
    format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format_and_escaping() {
        let mut e = Exposition::default();
        e.family("ferry_packets_total", Kind::Counter, "Packets by reason.")
            .sample("ferry_packets_total", &[("reason", "forwarded")], 3.0)
            .sample("ferry_packets_total", &[("reason", "a\"b")], 0.0);
        e.family("ferry_up", Kind::Gauge, "Up.")
            .sample("ferry_up", &[], 1.0);
        assert_eq!(
            e.finish(),
            "# HELP ferry_packets_total Packets by reason.\n# TYPE ferry_packets_total counter\n\
ferry_packets_total{reason=\"forwarded\"} 3\nferry_packets_total{reason=\"a\\\"b\"} 0\n\
# HELP ferry_up Up.\n# TYPE ferry_up gauge\nferry_up 1\n"
        );
    }

    #[test]
    fn http_routes() {
        let ok = String::from_utf8(respond("GET /metrics HTTP/1.1\r\nHost: x\r\n", || {
            "m 1\n".into()
        }))
        .unwrap();
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nm 1\n"), "{ok}");
        assert!(ok.contains("Content-Length: 4\r\n"));
        let nf =
            String::from_utf8(respond("POST /metrics HTTP/1.1\r\n", || unreachable!())).unwrap();
        assert!(nf.starts_with("HTTP/1.0 404"), "{nf}");
    }
}
