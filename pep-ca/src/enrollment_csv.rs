//! The enrollment-ID CSV: the file the cloud's bulk first-to-claim upload takes.
//!
//! One format, written by the server (`GET /v3/enrollment-ids.csv`) and by `pep-cli
//! list-enrollment-ids --export csv`, so that both give the same bytes: the old tool's header (the
//! ten [`Column`] names), then one row per gateway; every field double-quoted with inner quotes
//! doubled, lines ended by CRLF (RFC 4180). The cloud reads the first column of every line after
//! the header.
//!
//! Formula injection: a spreadsheet opening the file runs a cell that starts with `=`, `+`, `-`,
//! `@` (or a tab or carriage return) as a formula. The free-text columns ([`Column::is_free_text`]:
//! the values a requester chose, such as `hardwareVersion`) get a leading `'` in that case; the
//! enrollment ID and the serial number, which the bulk upload reads, are never changed.

use std::borrow::Cow;
use std::io;

/// A failure to write the CSV (only the output's I/O can fail).
pub use csv::Error;

/// One column of the CSV, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    /// The device's enrollment ID (what the cloud's upload reads).
    EnrollmentId,
    /// The gateway's serial number (its endpoint name).
    SerialNumber,
    /// Its gateway-services URL.
    GatewayServicesAddress,
    /// Its API URL.
    ApiAddress,
    /// Its hardware version.
    HardwareVersion,
    /// Its radio configuration.
    RadioConfig,
    /// Its LED configuration.
    LedConfig,
    /// Its category (`production`, `development`).
    Category,
    /// Whether it is deployed (`true`/`false`).
    Deployed,
    /// When it was recorded, ms since the epoch.
    CreatedAt,
}

/// Number of columns.
pub const COLUMN_COUNT: usize = 10;

impl Column {
    /// Every column, in file order.
    pub const ALL: [Column; COLUMN_COUNT] = [
        Column::EnrollmentId,
        Column::SerialNumber,
        Column::GatewayServicesAddress,
        Column::ApiAddress,
        Column::HardwareVersion,
        Column::RadioConfig,
        Column::LedConfig,
        Column::Category,
        Column::Deployed,
        Column::CreatedAt,
    ];

    /// True for the columns holding text a requester chose (hardware version, radio and LED
    /// configuration, the two addresses), which are neutralised against formula injection.
    pub const fn is_free_text(self) -> bool {
        matches!(
            self,
            Column::GatewayServicesAddress
                | Column::ApiAddress
                | Column::HardwareVersion
                | Column::RadioConfig
                | Column::LedConfig
        )
    }

    /// The column's name in the header, which is also the field name of the JSON listing
    /// (`GET /v3/enrollment-ids`) its values come from.
    pub const fn name(self) -> &'static str {
        match self {
            Column::EnrollmentId => "enrollmentID",
            Column::SerialNumber => "serialNumber",
            Column::GatewayServicesAddress => "gatewayServicesAddress",
            Column::ApiAddress => "apiAddress",
            Column::HardwareVersion => "hardwareVersion",
            Column::RadioConfig => "radioConfig",
            Column::LedConfig => "ledConfig",
            Column::Category => "category",
            Column::Deployed => "deployed",
            Column::CreatedAt => "createdAt",
        }
    }
}

/// Writes the enrollment-ID CSV to `W`: [`Writer::header`] once, then [`Writer::row`] per gateway.
pub struct Writer<W: io::Write> {
    inner: csv::Writer<W>,
}

impl<W: io::Write> Writer<W> {
    /// A writer to `out`, in the file's quoting and line endings.
    pub fn new(out: W) -> Writer<W> {
        let inner = csv::WriterBuilder::new()
            .quote_style(csv::QuoteStyle::Always)
            .terminator(csv::Terminator::CRLF)
            .has_headers(false)
            .from_writer(out);
        Writer { inner }
    }

    /// Writes the header line.
    pub fn header(&mut self) -> Result<(), Error> {
        self.inner.write_record(Column::ALL.map(Column::name))
    }

    /// Writes one gateway's line: `cells` holds the value of each column of [`Column::ALL`], in
    /// that order (build it with `Column::ALL.map(..)`).
    pub fn row<T: AsRef<str>>(&mut self, cells: [T; COLUMN_COUNT]) -> Result<(), Error> {
        let cells = Column::ALL.iter().zip(cells.iter()).map(|(col, c)| {
            let c = c.as_ref();
            if col.is_free_text() {
                neutralise_formula(c)
            } else {
                Cow::Borrowed(c)
            }
        });
        self.inner
            .write_record(cells.collect::<Vec<_>>().iter().map(|c| c.as_bytes()))
    }

    /// Flushes and returns the output.
    pub fn into_inner(self) -> Result<W, Error> {
        self.inner
            .into_inner()
            .map_err(|e| Error::from(io::Error::new(e.error().kind(), e.error().to_string())))
    }
}

/// `cell` with a leading `'` when a spreadsheet would take it for a formula (OWASP's advice).
pub fn neutralise_formula(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

impl Writer<Vec<u8>> {
    /// A writer into memory (a page of a streamed export, a whole file of the CLI).
    pub fn in_memory() -> Writer<Vec<u8>> {
        Writer::new(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(write: impl FnOnce(&mut Writer<Vec<u8>>) -> Result<(), Error>) -> String {
        let mut w = Writer::in_memory();
        write(&mut w).unwrap();
        String::from_utf8(w.into_inner().unwrap()).unwrap()
    }

    #[test]
    fn formulas_are_neutralised_in_free_text_only() {
        let cells = [
            "-A-00",
            "=GW-1",
            "https://g",
            "https://a",
            "=cmd|' /C calc'!A0",
            "+1",
            "@SUM(1)",
            "production",
            "true",
            "1",
        ];
        assert_eq!(
            bytes(|w| w.row(cells)),
            "\"-A-00\",\"=GW-1\",\"https://g\",\"https://a\",\"'=cmd|' /C calc'!A0\",\"'+1\",\"'@SUM(1)\",\"production\",\"true\",\"1\"\r\n"
        );
        assert_eq!(neutralise_formula("-1"), "'-1");
        assert_eq!(neutralise_formula("arm-pelion"), "arm-pelion");
    }

    #[test]
    fn header_is_the_old_tools() {
        assert_eq!(
            bytes(|w| w.header()),
            "\"enrollmentID\",\"serialNumber\",\"gatewayServicesAddress\",\"apiAddress\",\"hardwareVersion\",\"radioConfig\",\"ledConfig\",\"category\",\"deployed\",\"createdAt\"\r\n"
        );
    }

    #[test]
    fn every_field_is_quoted_inner_quotes_doubled_empty_fields_too() {
        let cells = [
            "A-00",
            "GW \"1\", rev.2",
            "https://gw",
            "",
            "hw\r\nx",
            "00",
            "01",
            "production",
            "true",
            "1700000000123",
        ];
        assert_eq!(
            bytes(|w| w.row(cells)),
            "\"A-00\",\"GW \"\"1\"\", rev.2\",\"https://gw\",\"\",\"hw\r\nx\",\"00\",\"01\",\"production\",\"true\",\"1700000000123\"\r\n"
        );
        assert_eq!(
            bytes(|w| w.row([""; COLUMN_COUNT])),
            "\"\",\"\",\"\",\"\",\"\",\"\",\"\",\"\",\"\",\"\"\r\n"
        );
    }

    #[test]
    fn columns_are_in_file_order_and_distinct() {
        let names = Column::ALL.map(Column::name);
        assert_eq!(names[0], "enrollmentID");
        assert_eq!(names[COLUMN_COUNT - 1], "createdAt");
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), COLUMN_COUNT);
    }
}
