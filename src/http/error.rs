//! The one error format of every HTTP route (STYLE §14): a JSON body
//! `{"code": "…", "message": "…"}` with a stable, machine-readable `code` (the same word
//! the logs and metric labels use) and a message for people. HLS, the stream API, the
//! interaction API, the admin API and playback refusals all answer errors this way.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Response, StatusCode};

use super::Body;

/// The JSON body of an error.
pub fn body(code: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "code": code, "message": message }).to_string())
}

/// An error response with a fixed-size body (never cached).
pub fn full(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(body(code, message)))
        .expect("valid response")
}

/// An error response with the server's boxed body.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    full(status, code, message).map(BodyExt::boxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_json_shape() {
        let r = error(StatusCode::NOT_FOUND, "no_part", "no such \"part\"");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let v: serde_json::Value =
            serde_json::from_slice(&body("no_part", "no such \"part\"")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": "no_part", "message": "no such \"part\""})
        );
    }
}
