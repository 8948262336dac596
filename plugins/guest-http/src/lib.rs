//! A minimal blocking HTTP client over `wasi:http/outgoing-handler` (via the `wasi` crate 0.14).
//!
//! Only what the plugins need: a GET (or other body-less request) with headers, returning the
//! status and the whole body, with a cap on the body size.

use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};
use wasi::io::streams::StreamError;

/// A complete response.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a request failed before a complete response arrived.
#[derive(Debug)]
pub enum Error {
    /// The host refused the request (destination not granted to this plugin).
    Denied(String),
    /// The request could not be built (bad authority, path or header).
    Invalid(String),
    /// Connection, DNS, timeout or protocol failure.
    Transport(String),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Denied(m) | Error::Invalid(m) | Error::Transport(m) => f.write_str(m),
        }
    }
}

/// Request parameters.
pub struct Request<'a> {
    pub https: bool,
    /// `host:port`
    pub authority: &'a str,
    /// Path and query, starting with `/`.
    pub path_with_query: &'a str,
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Applied to connect, first byte and between bytes, when the host supports it.
    pub timeout_ms: u64,
    /// Larger bodies are an error.
    pub max_body: usize,
}

fn code_error(e: ErrorCode) -> Error {
    match e {
        ErrorCode::HttpRequestDenied => Error::Denied("outbound request denied by the host".into()),
        ErrorCode::HttpRequestUriInvalid => Error::Invalid("request URI invalid".into()),
        ErrorCode::DestinationNotFound => Error::Transport("destination not found".into()),
        ErrorCode::ConnectionRefused => Error::Transport("connection refused".into()),
        ErrorCode::ConnectionTimeout => Error::Transport("connection timed out".into()),
        other => Error::Transport(format!("{other:?}")),
    }
}

/// Send a body-less GET and wait for the complete response.
pub fn get(req: &Request<'_>) -> Result<Response, Error> {
    let mut list: Vec<(String, Vec<u8>)> = Vec::with_capacity(req.headers.len());
    for (name, value) in req.headers {
        list.push(((*name).to_string(), value.to_vec()));
    }
    let headers = Fields::from_list(&list).map_err(|e| Error::Invalid(format!("invalid header: {e:?}")))?;
    let request = OutgoingRequest::new(headers);
    request.set_method(&Method::Get).map_err(|()| Error::Invalid("method rejected".into()))?;
    request
        .set_scheme(Some(&if req.https { Scheme::Https } else { Scheme::Http }))
        .map_err(|()| Error::Invalid("scheme rejected".into()))?;
    request
        .set_authority(Some(req.authority))
        .map_err(|()| Error::Invalid(format!("invalid authority {:?}", req.authority)))?;
    request
        .set_path_with_query(Some(req.path_with_query))
        .map_err(|()| Error::Invalid(format!("invalid path {:?}", req.path_with_query)))?;
    let body = request.body().map_err(|()| Error::Invalid("request body unavailable".into()))?;

    let options = RequestOptions::new();
    let ns = req.timeout_ms.saturating_mul(1_000_000);
    // Hosts may not support every timeout; a refusal just leaves the host default.
    let _ = options.set_connect_timeout(Some(ns));
    let _ = options.set_first_byte_timeout(Some(ns));
    let _ = options.set_between_bytes_timeout(Some(ns));

    let future = outgoing_handler::handle(request, Some(options)).map_err(code_error)?;
    OutgoingBody::finish(body, None).map_err(code_error)?;

    let response = loop {
        match future.get() {
            Some(Ok(Ok(resp))) => break resp,
            Some(Ok(Err(e))) => return Err(code_error(e)),
            Some(Err(())) => return Err(Error::Transport("response already taken".into())),
            None => future.subscribe().block(),
        }
    };
    let status = response.status();
    let incoming = response.consume().map_err(|()| Error::Transport("response body unavailable".into()))?;
    let stream =
        incoming.stream().map_err(|()| Error::Transport("response body stream unavailable".into()))?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if out.len() + chunk.len() > req.max_body {
                    return Err(Error::Transport(format!(
                        "response body larger than {} bytes",
                        req.max_body
                    )));
                }
                out.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(Error::Transport(format!("reading response body: {}", e.to_debug_string())));
            }
        }
    }
    drop(stream);
    Ok(Response { status, body: out })
}
