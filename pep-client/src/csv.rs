//! The enrollment-ID CSV of the old tool, without `jq`.
//!
//! The old tool ran `jq -r '[header], (.results[] | [fields]) | @csv'`. This module produces the
//! same bytes: every string double-quoted with inner quotes doubled, numbers and booleans bare,
//! missing or null fields empty, one `\n`-terminated line per row.

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

/// The header line (with its `\n`).
pub fn header() -> String {
    let mut line = COLUMNS
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

/// One row (with its `\n`) for one `results` entry. Fails on a field that is an array or object,
/// as `jq`'s `@csv` does.
pub fn row(entry: &Value) -> Result<String, String> {
    let mut cells = Vec::with_capacity(COLUMNS.len());
    for col in COLUMNS {
        let cell = match entry.get(col) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => quote(s),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Array(_) | Value::Object(_)) => {
                return Err(format!("field {col} is not a string, number or boolean"));
            }
        };
        cells.push(cell);
    }
    let mut line = cells.join(",");
    line.push('\n');
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
            "\"enrollmentID\",\"serialNumber\",\"gatewayServicesAddress\",\"apiAddress\",\"hardwareVersion\",\"radioConfig\",\"ledConfig\",\"category\",\"deployed\",\"createdAt\"\n"
        );
    }

    #[test]
    fn rows_follow_jq_csv() {
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
            "\"A-00\",\"GW \"\"1\"\", rev.2\",\"https://gw\",\"https://api\",\"hw\",\"00\",\"01\",\"production\",true,1700000000123\n"
        );
    }

    #[test]
    fn missing_and_null_fields_are_empty_nested_ones_fail() {
        let e = json!({"enrollmentID": "A-00", "apiAddress": null});
        assert_eq!(row(&e).unwrap(), "\"A-00\",,,,,,,,,\n");
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
        assert!(doc.ends_with("\"A-2\",,,,,,,,,\n"));
    }
}
