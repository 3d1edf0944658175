//! Work orders (issue #17): the serials a factory expects to build, and the product they are.
//!
//! ```text
//! POST /v3/orders (JSON) ──▶ NewOrder::from_request: every serial, range and product field checked
//!                                 │
//!                                 ▼
//!                  store: orders, order_ranges, order_uploads + order_serials (all-or-nothing)
//!                                 ▲
//! POST /v3/orders/{id}/serials (text/csv) ── CsvSerials: one line at a time, streamed in batches
//!
//! provisioning: Store::order_of(serial) ──▶ OrderMatch ──▶ `[orders] required`, closed → 403;
//!               its Product fills the fields the request left out (before `[defaults]`)
//! ```
//!
//! An order's expected serials are an explicit list (JSON, or CSV uploads of up to
//! [`MAX_CSV_SERIALS`]) and ranges kept as ranges ([`SerialRange`]: a prefix and a number,
//! optionally zero-padded to a width), never expanded into rows.

use std::fmt;
use std::str::FromStr;

use pep_ca::EndpointName;
use serde::{Deserialize, Serialize};

use crate::model::{Category, Defaulted, FieldText, GatewayParams, HttpUrl};

/// Most serials one CSV upload may hold.
pub const MAX_CSV_SERIALS: u64 = 1_000_000;
/// Most explicit serials of the JSON body of `POST /v3/orders` (larger lists go by CSV).
pub const MAX_JSON_SERIALS: usize = 10_000;
/// Most ranges of one order.
pub const MAX_RANGES: usize = 100;
/// Longest CSV line accepted, bytes (a serial is at most 64 characters; room for a BOM, quotes
/// and spaces).
pub const MAX_CSV_LINE: usize = 512;
/// Widest zero-padded range number.
pub const MAX_WIDTH: u32 = 18;

/// Why an order, one of its serials, ranges or product fields is not acceptable: the JSON member
/// (or CSV line) and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidOrder {
    /// Where: `orderId`, `serials[3]`, `ranges[0].width`, `product.category`, `line 12`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl InvalidOrder {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> InvalidOrder {
        InvalidOrder {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A work order's identifier: 1–64 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or
/// digit (it is a URL path segment and a CSV cell).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderId(String);

impl OrderId {
    /// Longest accepted order ID.
    pub const MAX_LEN: usize = 64;

    /// Checks `id`.
    pub fn new(id: String) -> Result<OrderId, InvalidOrder> {
        let bad = |reason: String| Err(InvalidOrder::new("orderId", reason));
        if id.is_empty() || id.len() > Self::MAX_LEN {
            return bad(format!(
                "must have 1 to {} characters, not {}",
                Self::MAX_LEN,
                id.chars().count()
            ));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return bad(format!(
                "contains `{}`; an order ID is made of A-Z, a-z, 0-9, `.`, `_` and `-`",
                c.escape_default()
            ));
        }
        if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return bad("must start with a letter or a digit".to_owned());
        }
        Ok(OrderId(id))
    }

    /// The ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

crate::model::text_newtype!(OrderId => InvalidOrder);

/// Whether an order still admits its serials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Its serials may be provisioned.
    Open,
    /// Closed (`POST /v3/orders/{id}/close`): its serials are refused (403).
    Closed,
}

/// The identity defaults of an order's serials: each field set here replaces `[defaults]` (and
/// `device.hardware_version`) for them; a field the request sends still wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    /// `hardwareVersion`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware_version: Option<FieldText>,
    /// `radioConfig`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub radio_config: Option<FieldText>,
    /// `ledConfig`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub led_config: Option<FieldText>,
    /// `category`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// `apiAddress`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_address: Option<HttpUrl>,
    /// `gatewayServicesAddress`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_services_address: Option<HttpUrl>,
}

impl Product {
    /// Fills the fields `params` left to `[defaults]` with this product's (the request's own
    /// fields win, then the order's product, then `[defaults]`).
    pub fn fill(&self, params: &mut GatewayParams) {
        self.fill_where(params.defaulted, params);
    }

    /// Replaces the fields of `params` that `which` marks with this product's, where it sets them.
    pub(crate) fn fill_where(&self, which: Defaulted, params: &mut GatewayParams) {
        fn put<T: Clone>(replace: bool, product: &Option<T>, field: &mut T) {
            if let (true, Some(v)) = (replace, product) {
                *field = v.clone();
            }
        }
        let d = which;
        put(d.api_address, &self.api_address, &mut params.api_address);
        put(
            d.gateway_services_address,
            &self.gateway_services_address,
            &mut params.gateway_services_address,
        );
        put(
            d.hardware_version,
            &self.hardware_version,
            &mut params.hardware_version,
        );
        put(d.radio_config, &self.radio_config, &mut params.radio_config);
        put(d.led_config, &self.led_config, &mut params.led_config);
        put(d.category, &self.category, &mut params.category);
    }

    /// From the stored columns (checked when the order was created; a value that no longer
    /// passes is named).
    pub(crate) fn from_columns(columns: ProductFields) -> Result<Product, String> {
        columns.check(|name, e| format!("{}: {e}", name.column))
    }
}

/// A product field's names: in the API (`hardwareVersion`) and as its column
/// (`hardware_version`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FieldName {
    pub(crate) api: &'static str,
    pub(crate) column: &'static str,
}

impl ProductFields {
    /// The texts checked as the request fields of the same names are; `bad` words the refusal of
    /// the first that fails.
    pub(crate) fn check<E>(
        self,
        bad: impl Fn(FieldName, &dyn fmt::Display) -> E,
    ) -> Result<Product, E> {
        let text = |api, column, v: Option<String>| {
            v.map(FieldText::new)
                .transpose()
                .map_err(|e| bad(FieldName { api, column }, &e))
        };
        let url = |api, column, v: Option<String>| {
            v.map(HttpUrl::new)
                .transpose()
                .map_err(|e| bad(FieldName { api, column }, &e))
        };
        Ok(Product {
            hardware_version: text("hardwareVersion", "hardware_version", self.hardware_version)?,
            radio_config: text("radioConfig", "radio_config", self.radio_config)?,
            led_config: text("ledConfig", "led_config", self.led_config)?,
            category: self
                .category
                .map(|c| Category::from_str(&c))
                .transpose()
                .map_err(|e| {
                    let name = FieldName {
                        api: "category",
                        column: "category",
                    };
                    bad(name, &e)
                })?,
            api_address: url("apiAddress", "api_address", self.api_address)?,
            gateway_services_address: url(
                "gatewayServicesAddress",
                "gateway_services_address",
                self.gateway_services_address,
            )?,
        })
    }
}

/// The product fields as text, unchecked: the `product` member of `POST /v3/orders` as sent
/// (JSON names) and the product columns of an `orders` row (column names); both are checked into
/// a [`Product`] by the one rule of each field.
#[derive(Debug, Clone, Default, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductFields {
    pub(crate) hardware_version: Option<String>,
    pub(crate) radio_config: Option<String>,
    pub(crate) led_config: Option<String>,
    pub(crate) category: Option<String>,
    pub(crate) api_address: Option<String>,
    pub(crate) gateway_services_address: Option<String>,
}

/// A range of expected serials: `prefix` followed by every number of `first..=last`, written with
/// at least `width` digits (zero-padded) when a width is given, else without leading zeros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SerialRange {
    /// The text before the number.
    pub prefix: String,
    /// The first number.
    #[serde(rename = "from")]
    pub first: u64,
    /// The last number (inclusive).
    #[serde(rename = "to")]
    pub last: u64,
    /// The number's digits, zero-padded; `to` must fit in them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
}

impl SerialRange {
    /// Checks a range (`field` names it in errors): `from <= to`, `to` fits in `width`, and its
    /// first and last serials pass the endpoint-name rule (so every serial between does: same
    /// prefix, digits only, at most as long as the last).
    pub fn check(self, field: &str) -> Result<SerialRange, InvalidOrder> {
        let bad = |member: &str, reason: String| {
            Err(InvalidOrder::new(format!("{field}.{member}"), reason))
        };
        if self.first > self.last {
            return bad(
                "from",
                format!("{} is after `to` ({})", self.first, self.last),
            );
        }
        if let Some(w) = self.width {
            if !(1..=MAX_WIDTH).contains(&w) {
                return bad("width", format!("must be 1 to {MAX_WIDTH}, not {w}"));
            }
            let digits = self.last.to_string().len();
            if digits > w as usize {
                return bad(
                    "width",
                    format!(
                        "{w} is too narrow for `to` ({}, {digits} digits)",
                        self.last
                    ),
                );
            }
        }
        if self.last >= 10u64.pow(MAX_WIDTH) {
            return bad("to", format!("must be below 10^{MAX_WIDTH}"));
        }
        for n in [self.first, self.last] {
            let serial = self.serial(n);
            if let Err(e) = EndpointName::from_str(&serial) {
                return bad(
                    "prefix",
                    format!("makes `{serial}`, which is not a valid endpoint name: {e}"),
                );
            }
        }
        Ok(self)
    }

    /// The serial of number `n`.
    pub fn serial(&self, n: u64) -> String {
        match self.width {
            Some(w) => format!("{}{n:0w$}", self.prefix, w = w as usize),
            None => format!("{}{n}", self.prefix),
        }
    }

    /// How many serials the range holds.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Never: a checked range holds at least one serial.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// True when `serial` is one of the range's: the prefix, then exactly the digits of a number
    /// in range as this range writes it (`width` digits, or no leading zero).
    pub fn contains(&self, serial: &str) -> bool {
        let Some(digits) = serial.strip_prefix(self.prefix.as_str()) else {
            return false;
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        match self.width {
            Some(w) if digits.len() != w as usize => return false,
            None if digits.len() > 1 && digits.starts_with('0') => return false,
            _ => {}
        }
        digits
            .parse::<u64>()
            .is_ok_and(|n| (self.first..=self.last).contains(&n))
    }

    /// True when the two ranges share a serial.
    pub fn overlaps(&self, other: &SerialRange) -> bool {
        if self.prefix != other.prefix || self.width != other.width {
            // Different text forms may still meet (`GW-1` + `23` and `GW-12` + `3`): the
            // shorter prefix's range contains the other's first or last serial.
            return self.contains(&other.serial(other.first))
                || self.contains(&other.serial(other.last))
                || other.contains(&self.serial(self.first))
                || other.contains(&self.serial(self.last));
        }
        self.first <= other.last && other.first <= self.last
    }
}

/// The body of `POST /v3/orders`, as sent.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderRequest {
    /// The order's ID (`WO-2612-01`).
    pub order_id: String,
    /// Identity defaults of the order's serials.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub product: ProductFields,
    /// Explicit serials (at most [`MAX_JSON_SERIALS`]; more by CSV upload).
    #[serde(default)]
    pub serials: Vec<String>,
    /// Ranges of serials.
    #[serde(default)]
    pub ranges: Vec<SerialRange>,
}

/// A checked new order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// Its ID.
    pub order_id: OrderId,
    /// Its product.
    pub product: Product,
    /// Its explicit serials, no duplicates.
    pub serials: Vec<EndpointName>,
    /// Its ranges, none overlapping another.
    pub ranges: Vec<SerialRange>,
}

impl NewOrder {
    /// Checks everything in `request`; the first problem is named by its JSON member.
    pub fn from_request(request: OrderRequest) -> Result<NewOrder, InvalidOrder> {
        let order_id = OrderId::new(request.order_id)?;
        let product = request
            .product
            .check(|name, e| InvalidOrder::new(format!("product.{}", name.api), e.to_string()))?;
        if request.serials.len() > MAX_JSON_SERIALS {
            return Err(InvalidOrder::new(
                "serials",
                format!(
                    "has {} serials; at most {MAX_JSON_SERIALS} in JSON (upload more as text/csv \
                     to POST /v3/orders/{{orderId}}/serials)",
                    request.serials.len()
                ),
            ));
        }
        if request.ranges.len() > MAX_RANGES {
            return Err(InvalidOrder::new(
                "ranges",
                format!("has {} ranges; at most {MAX_RANGES}", request.ranges.len()),
            ));
        }
        let mut seen = std::collections::HashMap::new();
        let mut serials = Vec::with_capacity(request.serials.len());
        for (i, s) in request.serials.into_iter().enumerate() {
            let serial = EndpointName::from_str(&s).map_err(|e| {
                InvalidOrder::new(
                    format!("serials[{i}]"),
                    format!("is not a valid endpoint name: {e}"),
                )
            })?;
            if let Some(first) = seen.insert(s, i) {
                return Err(InvalidOrder::new(
                    format!("serials[{i}]"),
                    format!("repeats serials[{first}]"),
                ));
            }
            serials.push(serial);
        }
        let mut ranges: Vec<SerialRange> = Vec::with_capacity(request.ranges.len());
        for (i, r) in request.ranges.into_iter().enumerate() {
            let r = r.check(&format!("ranges[{i}]"))?;
            if let Some(j) = ranges.iter().position(|o| o.overlaps(&r)) {
                return Err(InvalidOrder::new(
                    format!("ranges[{i}]"),
                    format!("overlaps ranges[{j}]"),
                ));
            }
            ranges.push(r);
        }
        // An order without serials yet is allowed: CSV uploads may follow.
        Ok(NewOrder {
            order_id,
            product,
            serials,
            ranges,
        })
    }
}

/// The order a serial belongs to, as provisioning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderMatch {
    /// The order.
    pub order_id: OrderId,
    /// Open or closed.
    pub state: OrderState,
    /// Its identity defaults.
    pub product: Product,
}

/// Why a serial may not be provisioned under the work-order rules (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRefusal {
    /// `[orders] required` and the serial is in no order.
    #[error(
        "serial number {serial} is in no open work order, and [orders] required = true: add it \
         to an order (POST /v3/orders) first"
    )]
    NotInOrder {
        /// The serial.
        serial: String,
    },
    /// The serial's order is closed.
    #[error("serial number {serial} belongs to work order {order}, which is closed")]
    OrderClosed {
        /// The serial.
        serial: String,
        /// The order.
        order: OrderId,
    },
}

impl OrderRefusal {
    /// The rule's name (the 403's `rule`, the audit row's detail).
    pub fn rule(&self) -> &'static str {
        match self {
            OrderRefusal::NotInOrder { .. } => "orders.required",
            OrderRefusal::OrderClosed { .. } => "order_closed",
        }
    }
}

/// Decides a serial under the work-order rules: its open order (whose product applies), none
/// (when orders are not required), or a refusal.
pub fn admit(
    serial: &str,
    found: Option<OrderMatch>,
    required: bool,
) -> Result<Option<OrderMatch>, OrderRefusal> {
    match found {
        Some(m) if m.state == OrderState::Closed => Err(OrderRefusal::OrderClosed {
            serial: serial.to_owned(),
            order: m.order_id,
        }),
        Some(m) => Ok(Some(m)),
        None if required => Err(OrderRefusal::NotInOrder {
            serial: serial.to_owned(),
        }),
        None => Ok(None),
    }
}

/// One line of a CSV serial upload: the serial in its first cell. Empty lines are skipped; a
/// first line whose first cell is `serial` or `serialNumber` is a header. Quotes around the cell
/// and spaces around it are removed; more cells are ignored (a label printer's export).
pub fn csv_serial(line: &[u8], number: u64) -> Result<Option<EndpointName>, InvalidOrder> {
    let field = || format!("line {number}");
    let text = std::str::from_utf8(line).map_err(|_| InvalidOrder::new(field(), "is not UTF-8"))?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    // A UTF-8 byte-order mark (spreadsheet exports) before the first line.
    let text = if number == 1 {
        text.strip_prefix('\u{feff}').unwrap_or(text)
    } else {
        text
    };
    let trimmed = text.trim_start();
    // A quoted cell may hold commas (valid in a serial); `""` is a quote inside it.
    let quoted;
    let cell = match trimmed.strip_prefix('"') {
        Some(rest) => {
            let mut value = String::new();
            let mut chars = rest.chars();
            loop {
                match chars.next() {
                    Some('"') if chars.as_str().starts_with('"') => {
                        value.push('"');
                        chars.next();
                    }
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => return Err(InvalidOrder::new(field(), "has an unterminated quote")),
                }
            }
            let after = chars.as_str().trim_start();
            if !(after.is_empty() || after.starts_with(',')) {
                return Err(InvalidOrder::new(
                    field(),
                    "has text after the closing quote of its first cell",
                ));
            }
            quoted = value;
            quoted.as_str()
        }
        None => trimmed.split(',').next().unwrap_or_default().trim(),
    };
    if cell.is_empty() {
        if text.trim().is_empty() {
            return Ok(None);
        }
        return Err(InvalidOrder::new(field(), "has an empty serial cell"));
    }
    if number == 1 && (cell.eq_ignore_ascii_case("serial") || cell == "serialNumber") {
        return Ok(None);
    }
    EndpointName::from_str(cell).map(Some).map_err(|e| {
        InvalidOrder::new(
            field(),
            format!(
                "`{}` is not a valid endpoint name: {e}",
                cell.chars().take(64).collect::<String>().escape_default()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(prefix: &str, first: u64, last: u64, width: Option<u32>) -> SerialRange {
        SerialRange {
            prefix: prefix.into(),
            first,
            last,
            width,
        }
    }

    #[test]
    fn ranges_match_their_serials_only() {
        let r = range("GW-2612-", 1, 50_000, Some(6)).check("r").unwrap();
        assert_eq!(r.len(), 50_000);
        assert_eq!(r.serial(7), "GW-2612-000007");
        for yes in ["GW-2612-000001", "GW-2612-050000", "GW-2612-012345"] {
            assert!(r.contains(yes), "{yes}");
        }
        for no in [
            "GW-2612-000000",
            "GW-2612-050001",
            "GW-2612-1",
            "GW-2612-0000001",
            "GW-2612-00001a",
            "GW-2612-",
            "GW-2613-000001",
        ] {
            assert!(!r.contains(no), "{no}");
        }
        let r = range("A", 5, 120, None).check("r").unwrap();
        assert!(r.contains("A5") && r.contains("A120") && !r.contains("A05"));
        assert!(!r.contains("A4") && !r.contains("A121"));
    }

    #[test]
    fn range_checks_name_the_member() {
        let e = range("GW-", 9, 1, None).check("ranges[2]").unwrap_err();
        assert_eq!(e.field, "ranges[2].from");
        let e = range("GW-", 1, 1000, Some(3))
            .check("ranges[0]")
            .unwrap_err();
        assert_eq!(e.field, "ranges[0].width");
        assert!(e.reason.contains("too narrow"), "{e}");
        let e = range("bad*prefix", 1, 2, None)
            .check("ranges[0]")
            .unwrap_err();
        assert_eq!(e.field, "ranges[0].prefix");
        let e = range(&"x".repeat(60), 1, 100_000, None)
            .check("ranges[0]")
            .unwrap_err();
        assert!(e.reason.contains("endpoint name"), "{e}");
    }

    #[test]
    fn overlapping_ranges_are_found() {
        let a = range("GW-", 1, 100, Some(4));
        assert!(a.overlaps(&range("GW-", 100, 200, Some(4))));
        assert!(!a.overlaps(&range("GW-", 101, 200, Some(4))));
        assert!(!a.overlaps(&range("GW-", 1, 100, Some(5))));
        assert!(range("GW-1", 0, 99, Some(2)).overlaps(&range("GW-", 100, 199, None)));
    }

    #[test]
    fn order_ids() {
        assert!(OrderId::new("WO-2612-01".into()).is_ok());
        for bad in ["", "-x", "a/b", "a b", &"x".repeat(65)] {
            let e = OrderId::new(bad.into()).unwrap_err();
            assert_eq!(e.field, "orderId", "{bad}");
        }
    }

    #[test]
    fn csv_lines() {
        assert_eq!(csv_serial(b"serial", 1).unwrap(), None);
        assert_eq!(csv_serial(b"\xef\xbb\xbfserialNumber,x", 1).unwrap(), None);
        assert_eq!(csv_serial(b"", 4).unwrap(), None);
        assert_eq!(
            csv_serial(b" \"GW-1\" ,label\r", 2)
                .unwrap()
                .unwrap()
                .as_str(),
            "GW-1"
        );
        let e = csv_serial(b"GW*1", 7).unwrap_err();
        assert_eq!(e.field, "line 7");
        assert_eq!(
            csv_serial(b"\"GW,1 'x'\",label", 2)
                .unwrap()
                .unwrap()
                .as_str(),
            "GW,1 'x'"
        );
        // `""` is a quote inside a quoted cell (which the endpoint-name rule then refuses).
        let e = csv_serial(b"\"GW\"\"1\"", 2).unwrap_err();
        assert!(e.reason.contains("GW\\\"1"), "{e}");
        assert!(csv_serial(b"\"GW-1\"x", 2).is_err());
        assert!(csv_serial(b"\"GW-1", 3).is_err());
        assert!(csv_serial(b"\xff", 3).unwrap_err().reason.contains("UTF-8"));
        assert!(csv_serial(b",x", 3).is_err());
    }

    #[test]
    fn admission() {
        let m = |state| OrderMatch {
            order_id: OrderId::new("WO-1".into()).unwrap(),
            state,
            product: Product::default(),
        };
        assert!(admit("GW-1", Some(m(OrderState::Open)), true).is_ok());
        assert_eq!(admit("GW-1", None, false), Ok(None));
        let e = admit("GW-1", None, true).unwrap_err();
        assert_eq!(e.rule(), "orders.required");
        let e = admit("GW-1", Some(m(OrderState::Closed)), false).unwrap_err();
        assert_eq!(e.rule(), "order_closed");
        assert!(e.to_string().contains("WO-1"), "{e}");
    }
}
