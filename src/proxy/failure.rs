//! What a failed pass-through answers: the status and the `Sidecast-Error`
//! code that tell sidecast's own answers from the app's, and the short body
//! they carry.

use pingora::{ErrorSource, ErrorType};

use crate::http1::respond::{reason, Reply};

/// How a failed proxied request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// 0: nothing to answer (the client is gone).
    pub status: u16,
    /// The `Sidecast-Error` value.
    pub code: &'static str,
}

pub const UNREACHABLE: &str = "upstream-unreachable";
pub const TIMEOUT: &str = "upstream-timeout";
pub const UPSTREAM: &str = "upstream-error";

/// The app could not be connected to.
pub const UNREACHABLE_502: Failure = Failure {
    status: 502,
    code: UNREACHABLE,
};
/// The app's answer was not a response, or it closed before one.
pub const UPSTREAM_502: Failure = Failure {
    status: 502,
    code: UPSTREAM,
};
/// The app asked for a GRIP hold that cannot be followed (its
/// instructions are wrong, or the request is not one that can be held).
pub const GRIP_502: Failure = Failure {
    status: 502,
    code: "grip-error",
};
/// No response head within `[upstream] timeout`.
pub const TIMEOUT_504: Failure = Failure {
    status: 504,
    code: TIMEOUT,
};

/// Maps a pingora error to its answer. `connect_failed` is set when the
/// failure happened while connecting (pingora's `fail_to_connect` saw it).
pub fn classify(source: &ErrorSource, etype: &ErrorType, connect_failed: bool) -> Failure {
    use ErrorType::*;
    let f = |status, code| Failure { status, code };
    match (source, etype) {
        (_, HTTPStatus(code)) => f(*code, "sidecast"),
        (ErrorSource::Downstream, WriteError | ReadError | ConnectionClosed) => f(0, ""),
        (ErrorSource::Downstream, ReadTimedout) => f(408, "request-timeout"),
        (ErrorSource::Downstream, _) => f(400, "bad-request"),
        (
            ErrorSource::Upstream,
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure,
        ) => f(502, UNREACHABLE),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => f(504, TIMEOUT),
        _ if connect_failed => f(502, UNREACHABLE),
        (ErrorSource::Upstream, _) => f(502, UPSTREAM),
        _ => f(500, "internal-error"),
    }
}

/// The short body of sidecast's own error answers: `502 Bad Gateway`.
pub fn body(status: u16) -> String {
    format!("{status} {}\n", reason(status))
}

/// The whole answer, for when the listener writes it itself.
pub fn reply(f: Failure) -> Reply {
    let mut r = Reply::new(f.status).header("Sidecast-Error", f.code);
    r.content_type = Some("text/plain; charset=utf-8");
    r.body = body(f.status).into_bytes();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_errors() {
        let up = ErrorSource::Upstream;
        let down = ErrorSource::Downstream;
        let c = |s: &ErrorSource, t: ErrorType| classify(s, &t, false);
        assert_eq!(c(&up, ErrorType::ConnectRefused).code, UNREACHABLE);
        assert_eq!(c(&up, ErrorType::ConnectTimedout).status, 502);
        assert_eq!(
            c(&up, ErrorType::ReadTimedout),
            Failure {
                status: 504,
                code: TIMEOUT
            }
        );
        assert_eq!(c(&up, ErrorType::ConnectionClosed).code, UPSTREAM);
        assert_eq!(c(&up, ErrorType::InvalidHTTPHeader).status, 502);
        assert_eq!(
            classify(&up, &ErrorType::SocketError, true).code,
            UNREACHABLE
        );
        assert_eq!(c(&down, ErrorType::ConnectionClosed).status, 0);
        assert_eq!(c(&down, ErrorType::InvalidHTTPHeader).status, 400);
        assert_eq!(
            c(&ErrorSource::Internal, ErrorType::InternalError).status,
            500
        );
        assert_eq!(
            classify(&ErrorSource::Internal, &ErrorType::InternalError, true).code,
            UNREACHABLE
        );
        assert_eq!(c(&down, ErrorType::HTTPStatus(403)).status, 403);
        assert_eq!(body(504), "504 Gateway Timeout\n");
        let r = reply(Failure {
            status: 504,
            code: TIMEOUT,
        });
        let text = String::from_utf8(r.encode(1, false, false)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 504 Gateway Timeout\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Sidecast-Error: upstream-timeout\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n504 Gateway Timeout\n"), "{text}");
    }
}
