//! The enrollment-ID CSV of the old tool, without `jq`.
//!
//! The format (columns, quoting, CRLF) is [`pep_ca::enrollment_csv`], the one the pep server's
//! `GET /v3/enrollment-ids.csv` writes too, so that an `--all` export and the server's export are
//! the same bytes. This module only turns the listing's JSON entries into its cells: a column's
//! value is the entry's field of the same name, strings as they are, booleans and numbers as their
//! JSON text, missing or null fields as `""`.

use std::borrow::Cow;

use pep_ca::enrollment_csv::{Column, Writer};
use serde_json::Value;

/// The cell of `col` in one `results` entry. Fails on a field that is an array or object, which
/// no CSV cell can hold.
fn cell(entry: &Value, col: Column) -> Result<Cow<'_, str>, String> {
    match entry.get(col.name()) {
        None | Some(Value::Null) => Ok(Cow::Borrowed("")),
        Some(Value::String(s)) => Ok(Cow::Borrowed(s)),
        Some(Value::Bool(b)) => Ok(Cow::Owned(b.to_string())),
        Some(Value::Number(n)) => Ok(Cow::Owned(n.to_string())),
        Some(Value::Array(_) | Value::Object(_)) => Err(format!(
            "field {} is not a string, number or boolean",
            col.name()
        )),
    }
}

/// The whole CSV document for these entries: the header, then one row per entry.
pub fn document<'a>(entries: impl IntoIterator<Item = &'a Value>) -> Result<String, String> {
    let failed = |e: pep_ca::enrollment_csv::Error| format!("cannot write the CSV: {e}");
    let mut out = Writer::in_memory();
    out.header().map_err(failed)?;
    for entry in entries {
        // Every cell is checked before the row is written, so a bad entry writes nothing.
        let mut cells: [Cow<'_, str>; pep_ca::enrollment_csv::COLUMN_COUNT] = Default::default();
        for (slot, col) in cells.iter_mut().zip(Column::ALL) {
            *slot = cell(entry, col)?;
        }
        out.row(cells).map_err(failed)?;
    }
    let bytes = out.into_inner().map_err(failed)?;
    // Every cell is a `str` and the writer adds only ASCII quotes, commas and line endings, so
    // this cannot fail; it is checked rather than assumed.
    String::from_utf8(bytes).map_err(|e| format!("the CSV is not UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The row of one entry: the document without its header line.
    fn row(entry: &Value) -> Result<String, String> {
        let doc = document([entry])?;
        let header_end = doc.find("\r\n").unwrap() + 2;
        Ok(doc[header_end..].to_owned())
    }

    #[test]
    fn header_is_the_old_tools() {
        assert_eq!(
            document([]).unwrap(),
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
