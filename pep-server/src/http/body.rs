//! JSON object bodies of the operators' actions, with errors that name the field.

use serde_json::{Map, Value};

use super::error::ApiError;

/// The body as one JSON object: 400 when it is not JSON, or `not_object` (which says the object
/// expected) when it is JSON but not an object.
pub(super) fn json_object(body: &[u8], not_object: &str) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::bad_request(not_object)),
    }
}

/// [`json_object`] with no fields but `known`: the first other one is a 400 naming it (a misspelt
/// optional field would otherwise be silently dropped).
pub(super) fn known_fields(
    body: &[u8],
    not_object: &str,
    known: &[&str],
) -> Result<Map<String, Value>, ApiError> {
    let map = json_object(body, not_object)?;
    if let Some(name) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_param(name, "is not a known field"));
    }
    Ok(map)
}
