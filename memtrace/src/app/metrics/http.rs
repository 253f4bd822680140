//! A minimal HTTP/1.1 responder on tokio's TcpListener: `GET /metrics` (and HEAD) with
//! the exposition the `Accept` header asks for, one request per connection (`Connection:
//! close`), a bounded number of connections at a time and a read deadline, so a slow or
//! hostile client costs nothing but its own socket.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::{
    encode::{self, Encoder, Shared},
    model::Model,
};

/// Connections served at once; more wait in the listen backlog.
const CONNECTIONS: usize = 16;
/// How long a client may take to send its request head.
const READ_DEADLINE: Duration = Duration::from_secs(10);
/// The largest request head read.
const HEAD_MAX: usize = 16 * 1024;

/// What refreshes the model right before a scrape is encoded (live values such as the BPF
/// maps' memory).
pub type Refresh = fn(&mut Model);

/// Serves `listener` until the runtime ends.
pub async fn serve(listener: TcpListener, model: Shared, refresh: Refresh) {
    let encoder = Arc::new(Encoder::new(model.clone()));
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (encoder, model) = (encoder.clone(), model.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &encoder, &model, refresh).await {
                log::debug!("metrics: connection: {e}");
            }
            drop(permit);
        });
    }
}

/// The request head: method, path and Accept (None when the client sent none in time).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() + n > HEAD_MAX {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(true)
    };
    match tokio::time::timeout(READ_DEADLINE, read).await {
        Ok(Ok(true)) => Ok(Some(String::from_utf8_lossy(&head).into_owned())),
        Ok(Ok(false)) | Err(_) => Ok(None),
        Ok(Err(e)) => Err(e),
    }
}

/// The response to a request head: (status line, content type, body, send the body).
pub fn respond(head: &str, encoder: &Encoder) -> (&'static str, &'static str, String, bool) {
    let mut lines = head.lines();
    let request = lines.next().unwrap_or("");
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .map_or("", |(_, v)| v.trim());
    let body = method != "HEAD";
    let text = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", text, "only GET and HEAD\n".into(), true);
    }
    match target.split('?').next().unwrap_or("") {
        "/metrics" => {
            let om = encoder.openmetrics();
            if encode::wants_openmetrics(accept) {
                ("200 OK", encode::OPENMETRICS, om, body)
            } else {
                ("200 OK", encode::PROMETHEUS, encode::prometheus_text(&om), body)
            }
        }
        "/" => ("200 OK", text, "memtrace: metrics at /metrics\n".into(), body),
        _ => ("404 Not Found", text, "not found: metrics are at /metrics\n".into(), body),
    }
}

async fn connection(mut stream: TcpStream, encoder: &Encoder, model: &Shared, refresh: Refresh) -> std::io::Result<()> {
    let Some(head) = read_head(&mut stream).await? else { return Ok(()) };
    refresh(&mut encode::lock(model));
    let (status, ctype, body, send) = respond(&head, encoder);
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if send {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn answers_metrics_in_the_format_asked() {
        let enc = Encoder::new(Arc::new(Mutex::new(Model::new(50, "0.1.0", "6.18"))));
        let (status, ctype, body, send) = respond("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", &enc);
        assert_eq!((status, ctype, send), ("200 OK", encode::PROMETHEUS, true));
        assert!(body.contains("# TYPE memtrace_build_info gauge"), "{body}");
        let (_, ctype, body, _) =
            respond("GET /metrics HTTP/1.1\r\naccept: application/openmetrics-text; version=1.0.0\r\n\r\n", &enc);
        assert_eq!(ctype, encode::OPENMETRICS);
        assert!(body.ends_with("# EOF\n"));
        assert!(!respond("HEAD /metrics HTTP/1.1\r\n\r\n", &enc).3, "HEAD: no body");
        assert_eq!(respond("GET /nope HTTP/1.1\r\n\r\n", &enc).0, "404 Not Found");
        assert_eq!(respond("POST /metrics HTTP/1.1\r\n\r\n", &enc).0, "405 Method Not Allowed");
    }
}
