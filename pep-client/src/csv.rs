//! The enrollment-ID CSV of the old tool, without `jq`.
//!
//! The old tool's header (the ten field names, quoted) and one quoted row per gateway, exactly as
//! the pep server's `GET /v3/enrollment-ids.csv` writes them, so that an `--all` export and the
//! server's export are the same bytes: every field double-quoted with inner quotes doubled
//! (booleans and numbers as their JSON text, missing or null fields as `""`), lines ended by CRLF
//! (RFC 4180). The cloud's bulk upload reads the first column of every line after the header.

use serde_json::Value;

/// The CSV columns, in order; also the JSON field names they come from.
pub const COLUMNS: [&str; 10] = [
    "enrollmentID",
    "serialNumber",
    "gatewayServicesAddress",
    "apiAddress",
    "hardwareVersion",
    "radioConfig",
    "ledConfig",
    "category",
    "deployed",
    "createdAt",
];

/// The line ending (RFC 4180, as the server's export).
pub const EOL: &str = "\r\n";

/// The header line (with its line ending).
pub fn header() -> String {
    let mut line = COLUMNS
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str(EOL);
    line
}

/// One row (with its line ending) for one `results` entry. Fails on a field that is an array or
/// object, which no CSV cell can hold.
pub fn row(entry: &Value) -> Result<String, String> {
    let mut cells = Vec::with_capacity(COLUMNS.len());
    for col in COLUMNS {
        let cell = match entry.get(col) {
            None | Some(Value::Null) => quote(""),
            Some(Value::String(s)) => quote(s),
            Some(Value::Bool(b)) => quote(&b.to_string()),
            Some(Value::Number(n)) => quote(&n.to_string()),
            Some(Value::Array(_) | Value::Object(_)) => {
                return Err(format!("field {col} is not a string, number or boolean"));
            }
        };
        cells.push(cell);
    }
    let mut line = cells.join(",");
    line.push_str(EOL);
    Ok(line)
}

/// The whole CSV document for these entries.
pub fn document<'a>(entries: impl IntoIterator<Item = &'a Value>) -> Result<String, String> {
    let mut out = header();
    for e in entries {
        out.push_str(&row(e)?);
    }
    Ok(out)
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_is_the_old_tools() {
        assert_eq!(
            header(),
            "\"enrollmentID\",\"serialNumber\",\"gatewayServicesAddress\",\"apiAddress\",\"hardwareVersion\",\"radioConfig\",\"ledConfig\",\"category\",\"deployed\",\"createdAt\"\r\n"
        );
    }

    #[test]
    fn rows_are_fully_quoted_like_the_servers_export() {
        let e = json!({
            "_id": 7,
            "enrollmentID": "A-00",
            "serialNumber": "GW \"1\", rev.2",
            "gatewayServicesAddress": "https://gw",
            "apiAddress": "https://api",
            "hardwareVersion": "hw",
            "radioConfig": "00",
            "ledConfig": "01",
            "category": "production",
            "deployed": true,
            "createdAt": 1_700_000_000_123u64,
        });
        assert_eq!(
            row(&e).unwrap(),
            "\"A-00\",\"GW \"\"1\"\", rev.2\",\"https://gw\",\"https://api\",\"hw\",\"00\",\"01\",\"production\",\"true\",\"1700000000123\"\r\n"
        );
    }

    #[test]
    fn missing_and_null_fields_are_empty_nested_ones_fail() {
        let e = json!({"enrollmentID": "A-00", "apiAddress": null});
        assert_eq!(
            row(&e).unwrap(),
            "\"A-00\",\"\",\"\",\"\",\"\",\"\",\"\",\"\",\"\",\"\"\r\n"
        );
        let bad = json!({"enrollmentID": ["x"]});
        assert!(row(&bad).unwrap_err().contains("enrollmentID"));
    }

    #[test]
    fn document_has_header_then_rows() {
        let rows = [
            json!({"enrollmentID": "A-1"}),
            json!({"enrollmentID": "A-2"}),
        ];
        let doc = document(rows.iter()).unwrap();
        assert_eq!(doc.lines().count(), 3);
        assert!(doc.starts_with("\"enrollmentID\","));
        assert!(doc.ends_with("\"A-2\",\"\",\"\",\"\",\"\",\"\",\"\",\"\",\"\",\"\"\r\n"));
    }
}
