//! Batch service errors: the OData error object with the service's own codes.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error as the Batch service returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The service's error code (`PoolNotFound`, `InvalidPropertyValue`, ...).
    pub code: &'static str,
    /// The human-readable message.
    pub message: String,
    /// Extra detail pairs (`PropertyName`, `PropertyValue`, `Reason`, ...).
    pub values: Vec<(&'static str, String)>,
}

impl BatchError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        BatchError {
            status,
            code,
            message: message.into(),
            values: Vec::new(),
        }
    }

    /// Adds a detail pair.
    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.values.push((key, value.into()));
        self
    }

    /// 404 for a missing resource of `kind` (`Pool`, `Job`, `Task`).
    pub fn not_found(code: &'static str, what: &str) -> Self {
        BatchError::new(
            StatusCode::NOT_FOUND,
            code,
            format!("The specified {what} does not exist."),
        )
    }

    /// 409 for a resource that already exists.
    pub fn exists(code: &'static str, what: &str) -> Self {
        BatchError::new(
            StatusCode::CONFLICT,
            code,
            format!("The specified {what} already exists."),
        )
    }

    /// 400 for a property with a bad value.
    pub fn invalid_property(name: &str, value: &str, reason: &str) -> Self {
        BatchError::new(
            StatusCode::BAD_REQUEST,
            "InvalidPropertyValue",
            "The value provided for one of the properties in the request body is invalid.",
        )
        .with("PropertyName", name)
        .with("PropertyValue", value)
        .with("Reason", reason)
    }

    /// 400 for a required property that is missing.
    pub fn missing_property(name: &str) -> Self {
        BatchError::new(
            StatusCode::BAD_REQUEST,
            "MissingRequiredProperty",
            "A required property was not specified in the request body.",
        )
        .with("PropertyName", name)
    }

    /// 400 for a body that is not valid JSON of the right shape.
    pub fn invalid_body(reason: impl Into<String>) -> Self {
        BatchError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestBody",
            "The specified Request Body is not syntactically valid.",
        )
        .with("Reason", reason)
    }

    /// The JSON body.
    pub fn body(&self, account_url: &str) -> serde_json::Value {
        json!({
            "odata.metadata": format!("{account_url}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"),
            "code": self.code,
            "message": { "lang": "en-US", "value": self.message },
            "values": self.values.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        })
    }
}

impl IntoResponse for BatchError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::NOT_MODIFIED {
            return self.status.into_response(); // a 304 has no body
        }
        // The account URL is filled in by the middleware that knows it; here a relative one.
        let mut response = (self.status, axum::Json(self.body(""))).into_response();
        if let Ok(v) = HeaderValue::from_str(self.code) {
            response.headers_mut().insert("x-ms-error-code", v);
        }
        response.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/json;odata=minimalmetadata"),
        );
        response
    }
}
