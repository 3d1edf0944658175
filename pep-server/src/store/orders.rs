//! Work orders in the store (both backends; every SQL text is in `sql.rs`).
//!
//! Orders are written on the read pool's connections, not on the SQLite writer thread: they are
//! rare, and a CSV upload of a million serials must not sit in the provisioning's group commits.
//! A SQLite write transaction starts `IMMEDIATE` (it takes the write lock at once and waits for
//! it with the busy timeout, instead of failing when it would upgrade a read). Every transaction
//! here is short: an upload writes its serials one batch per statement and makes them count with
//! one final update ([`Store::finish_upload`]), so a failed or abandoned upload leaves nothing
//! that counts, and its rows are deleted again ([`Store::abort_upload`]).

use pep_ca::EndpointName;

use super::tx::{Tx, on_tx};
use super::{Store, StoreError, StoreStats, count, now_ms, q, sql};
use crate::orders::{
    NewOrder, OrderId, OrderMatch, OrderState, Product, ProductFields, SerialRange,
};

/// Rows of one multi-row insert of explicit serials (2 + 2 × rows parameters: within both
/// backends' limits).
pub const SERIAL_BATCH: usize = 1000;

/// Rows an abandoned upload deletes per statement.
const DELETE_SLICE: i64 = 10_000;

/// Most orders `GET /v3/orders` lists.
pub const MAX_LISTED_ORDERS: u32 = 1000;

/// Why an order write was refused (4xx) or failed (500).
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// An order with this ID exists (409).
    #[error("work order {0} exists already")]
    Exists(OrderId),
    /// No order has this ID (404).
    #[error("no work order {0}")]
    Unknown(OrderId),
    /// The order is closed: it takes no more serials (409).
    #[error("work order {0} is closed")]
    Closed(OrderId),
    /// An explicit serial is expected already (409, or 400 naming the line of a CSV upload).
    #[error("{at}: serial number {serial} {held}")]
    SerialTaken {
        /// `serials[3]` or `line 12`.
        at: String,
        /// The index in `serials`, or the CSV line number.
        line: i64,
        /// The serial.
        serial: String,
        /// By whom: "is already expected by work order X", "repeats line 4".
        held: String,
    },
    /// A range overlaps a range of another open order (409).
    #[error("ranges[{index}] overlaps a range of the open work order {other}")]
    RangeOverlap {
        /// The new range's index.
        index: usize,
        /// The other order.
        other: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One batch of explicit serials being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadId(i64);

/// An order as listed: its state, product, what is expected and how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSummary {
    /// The order.
    pub order_id: OrderId,
    /// Open or closed.
    pub state: OrderState,
    /// Its identity defaults.
    pub product: Product,
    /// Its ranges.
    pub ranges: Vec<SerialRange>,
    /// Serials expected: the explicit ones (of finished uploads) and every range's.
    pub expected: u64,
    /// Of its identities: deployed.
    pub deployed: u64,
    /// Failed (retryable).
    pub failed: u64,
    /// Being provisioned now.
    pub in_progress: u64,
    /// In doubt (an operator decides).
    pub in_doubt: u64,
    /// Revoked (may be provisioned again).
    pub revoked: u64,
    /// Who created it.
    pub created_by: String,
    /// When, ms since the epoch.
    pub created_at_ms: i64,
    /// When it was closed, ms since the epoch.
    pub closed_at_ms: Option<i64>,
}

/// Result of [`Store::close_order`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    /// Closed now.
    Closed,
    /// It was closed already (nothing changed).
    AlreadyClosed,
    /// No such order.
    Unknown,
}

/// An `orders` row, every column (`sql::order_columns`; `migrate-store` copies it as it is).
#[derive(sqlx::FromRow)]
pub(super) struct OrderRow {
    pub(super) order_id: String,
    pub(super) state: String,
    #[sqlx(flatten)]
    pub(super) product: ProductFields,
    pub(super) created_by: String,
    pub(super) created_at: i64,
    pub(super) closed_at: Option<i64>,
}

impl OrderRow {
    fn into_match(self) -> Result<(OrderMatch, String, i64, Option<i64>), StoreError> {
        let corrupt =
            |e: String| StoreError::Corrupt(format!("work order `{}`: {e}", self.order_id));
        let order_id = OrderId::new(self.order_id.clone()).map_err(|e| corrupt(e.to_string()))?;
        let state = match self.state.as_str() {
            "open" => OrderState::Open,
            "closed" => OrderState::Closed,
            other => return Err(corrupt(format!("unknown state `{other}`"))),
        };
        let product = Product::from_columns(self.product).map_err(corrupt)?;
        Ok((
            OrderMatch {
                order_id,
                state,
                product,
            },
            self.created_by,
            self.created_at,
            self.closed_at,
        ))
    }
}

/// A range row.
#[derive(sqlx::FromRow)]
struct RangeRow {
    prefix: String,
    first_n: i64,
    last_n: i64,
    width: Option<i64>,
}

impl RangeRow {
    fn range(&self) -> Result<SerialRange, StoreError> {
        let corrupt = || StoreError::Corrupt(format!("a range of prefix `{}`", self.prefix));
        Ok(SerialRange {
            first: u64::try_from(self.first_n).map_err(|_| corrupt())?,
            last: u64::try_from(self.last_n).map_err(|_| corrupt())?,
            width: self
                .width
                .map(u32::try_from)
                .transpose()
                .map_err(|_| corrupt())?,
            prefix: self.prefix.clone(),
        })
    }
}

/// A range with its order's row (`sql::RANGES_FOR_SERIAL`).
#[derive(sqlx::FromRow)]
struct RangeOrderRow {
    #[sqlx(flatten)]
    range: RangeRow,
    #[sqlx(flatten)]
    order: OrderRow,
}

/// A range row with its order's ID (`sql::OPEN_RANGES`).
#[derive(sqlx::FromRow)]
struct OpenRangeRow {
    order_id: String,
    #[sqlx(flatten)]
    range: RangeRow,
}

/// The state of `order` (`open`, `closed`) in `tx`; `None` for no such order.
async fn order_state(tx: &mut Tx, order: &OrderId) -> Result<Option<String>, StoreError> {
    on_tx!(tx, conn => {
        sqlx::query_scalar(sql::ORDER_STATE)
            .bind(order.as_str())
            .fetch_optional(conn)
            .await
    })
    .map_err(q("reading a work order"))
}

/// The text of a batch of `n` serials: the full batch's is built once.
fn batch_sql(n: usize) -> std::borrow::Cow<'static, str> {
    static FULL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| sql::insert_order_serials(SERIAL_BATCH));
    if n == SERIAL_BATCH {
        std::borrow::Cow::Borrowed(FULL.as_str())
    } else {
        std::borrow::Cow::Owned(sql::insert_order_serials(n))
    }
}

/// Binds a batch: the order, the upload, then each serial and its line.
macro_rules! bind_batch {
    ($sql:expr, $order:expr, $upload:expr, $rows:expr) => {{
        let mut query = sqlx::query($sql).bind($order).bind($upload);
        for (line, serial) in $rows {
            query = query.bind(serial.as_str()).bind(*line);
        }
        query
    }};
}

impl Store {
    /// Creates `order` (open) with its ranges and explicit serials, in one transaction: all of it
    /// or nothing. `who` is the creator (token name and address).
    pub async fn create_order(&self, order: &NewOrder, who: &str) -> Result<(), OrderError> {
        let mut tx = Tx::begin_write(self, "starting an order transaction").await?;
        let id = order.order_id.as_str();
        let p = &order.product;
        let text = |v: &Option<crate::model::FieldText>| v.as_ref().map(|t| t.as_str().to_owned());
        let url = |v: &Option<crate::model::HttpUrl>| v.as_ref().map(|t| t.as_str().to_owned());
        let now = now_ms();
        let inserted = on_tx!(&mut tx, conn => {
            sqlx::query(sql::INSERT_ORDER)
                .bind(id)
                .bind(text(&p.hardware_version))
                .bind(text(&p.radio_config))
                .bind(text(&p.led_config))
                .bind(p.category.map(|c| c.as_str()))
                .bind(url(&p.api_address))
                .bind(url(&p.gateway_services_address))
                .bind(who)
                .bind(now)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })
        .map_err(q("creating a work order"))?;
        if inserted == 0 {
            return Err(OrderError::Exists(order.order_id.clone()));
        }
        let open: Vec<OpenRangeRow> =
            on_tx!(&mut tx, conn => sqlx::query_as(sql::OPEN_RANGES).fetch_all(conn).await)
                .map_err(q("reading the ranges of the open orders"))?;
        for (index, r) in order.ranges.iter().enumerate() {
            for other in &open {
                if other.order_id != id && other.range.range()?.overlaps(r) {
                    return Err(OrderError::RangeOverlap {
                        index,
                        other: other.order_id.clone(),
                    });
                }
            }
            on_tx!(&mut tx, conn => {
                sqlx::query(sql::INSERT_RANGE)
                    .bind(id)
                    .bind(r.prefix.as_str())
                    .bind(i64::try_from(r.first).unwrap_or(i64::MAX))
                    .bind(i64::try_from(r.last).unwrap_or(i64::MAX))
                    .bind(r.width.map(i64::from))
                    .execute(conn)
                    .await
                    .map(|r| r.rows_affected())
            })
            .map_err(q("storing a range"))?;
        }
        if !order.serials.is_empty() {
            let upload: i64 = on_tx!(&mut tx, conn => {
                sqlx::query_scalar(sql::BEGIN_UPLOAD)
                    .bind(id)
                    .bind(now)
                    .fetch_one(conn)
                    .await
            })
            .map_err(q("starting the serials of an order"))?;
            let rows: Vec<(i64, &EndpointName)> = order
                .serials
                .iter()
                .enumerate()
                .map(|(i, s)| (i64::try_from(i).unwrap_or(i64::MAX), s))
                .collect();
            for chunk in rows.chunks(SERIAL_BATCH) {
                let sql = batch_sql(chunk.len());
                let done = on_tx!(&mut tx, conn => {
                    bind_batch!(sql.as_ref(), id, upload, chunk.iter().map(|(l, s)| (l, *s)))
                        .execute(conn)
                        .await
                        .map(|r| r.rows_affected())
                })
                .map_err(q("storing the serials of an order"))?;
                if done < chunk.len() as u64 {
                    let (index, serial, held) = first_taken(&mut tx, upload, chunk).await?;
                    return Err(OrderError::SerialTaken {
                        at: format!("serials[{index}]"),
                        line: index,
                        serial,
                        held: held.describe("serials[", "]"),
                    });
                }
            }
            on_tx!(&mut tx, conn => {
                sqlx::query(sql::FINISH_UPLOAD)
                    .bind(i64::try_from(order.serials.len()).unwrap_or(i64::MAX))
                    .bind(upload)
                    .execute(conn)
                    .await
                    .map(|r| r.rows_affected())
            })
            .map_err(q("finishing the serials of an order"))?;
        }
        tx.commit("committing an order transaction").await?;
        Ok(())
    }

    /// Starts a batch of explicit serials for the open order `order` (a CSV upload). First
    /// deletes batches left loading since before `stale_before_ms` (their server stopped).
    pub async fn begin_upload(
        &self,
        order: &OrderId,
        stale_before_ms: i64,
    ) -> Result<UploadId, OrderError> {
        let stale: Vec<(i64,)> = self
            .rows(
                sql::STALE_UPLOADS,
                stale_before_ms,
                "finding abandoned uploads",
            )
            .await?;
        for (id,) in stale {
            tracing::warn!(upload = id, "deleting an upload its server abandoned");
            self.abort_upload(UploadId(id)).await?;
        }
        let mut tx = Tx::begin_write(self, "starting an order transaction").await?;
        let state = order_state(&mut tx, order).await?;
        match state.as_deref() {
            None => return Err(OrderError::Unknown(order.clone())),
            Some("open") => {}
            Some(_) => return Err(OrderError::Closed(order.clone())),
        }
        let id: i64 = on_tx!(&mut tx, conn => {
            sqlx::query_scalar(sql::BEGIN_UPLOAD)
                .bind(order.as_str())
                .bind(now_ms())
                .fetch_one(conn)
                .await
        })
        .map_err(q("starting an upload"))?;
        tx.commit("committing an order transaction").await?;
        Ok(UploadId(id))
    }

    /// Writes one batch (at most [`SERIAL_BATCH`]) of `(line, serial)` of upload `upload`. A
    /// serial another order expects, or that repeats an earlier line, is named with its line;
    /// then nothing of the batch is kept (one statement) and the caller aborts the upload.
    pub async fn upload_batch(
        &self,
        order: &OrderId,
        upload: UploadId,
        rows: &[(i64, EndpointName)],
    ) -> Result<(), OrderError> {
        let sql = batch_sql(rows.len());
        let rows_ref: Vec<(i64, &EndpointName)> = rows.iter().map(|(l, s)| (*l, s)).collect();
        let mut tx = Tx::begin_write(self, "starting an order transaction").await?;
        let done = on_tx!(&mut tx, conn => {
            bind_batch!(sql.as_ref(), order.as_str(), upload.0, rows_ref.iter().map(|(l, s)| (l, *s)))
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })
        .map_err(q("storing uploaded serials"))?;
        if done < rows.len() as u64 {
            let (line, serial, held) = first_taken(&mut tx, upload.0, &rows_ref).await?;
            return Err(OrderError::SerialTaken {
                at: format!("line {line}"),
                line,
                serial,
                held: held.describe("line ", ""),
            });
        }
        tx.commit("committing an order transaction").await?;
        Ok(())
    }

    /// Makes upload `upload` count (`serials` rows), if its order is still open.
    pub async fn finish_upload(
        &self,
        order: &OrderId,
        upload: UploadId,
        serials: u64,
    ) -> Result<(), OrderError> {
        let mut tx = Tx::begin_write(self, "starting an order transaction").await?;
        let state = order_state(&mut tx, order).await?;
        if state.as_deref() != Some("open") {
            return Err(OrderError::Closed(order.clone()));
        }
        let done = on_tx!(&mut tx, conn => {
            sqlx::query(sql::FINISH_UPLOAD)
                .bind(i64::try_from(serials).unwrap_or(i64::MAX))
                .bind(upload.0)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })
        .map_err(q("finishing an upload"))?;
        if done != 1 {
            return Err(StoreError::Corrupt(format!(
                "upload {} of work order {order} is no longer loading",
                upload.0
            ))
            .into());
        }
        tx.commit("committing an order transaction").await?;
        Ok(())
    }

    /// Deletes what upload `upload` wrote, a slice at a time (none of it ever counted).
    pub async fn abort_upload(&self, upload: UploadId) -> Result<(), StoreError> {
        loop {
            let done = on_pool!(self, pool => {
                sqlx::query(sql::DELETE_UPLOAD_ROWS)
                    .bind(upload.0)
                    .bind(DELETE_SLICE)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            })
            .map_err(q("deleting an abandoned upload"))?;
            if done == 0 {
                break;
            }
        }
        on_pool!(self, pool => {
            sqlx::query(sql::DELETE_UPLOAD)
                .bind(upload.0)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .map_err(q("deleting an abandoned upload"))?;
        Ok(())
    }

    /// Closes `order`: its serials are refused from now on.
    pub async fn close_order(&self, order: &OrderId) -> Result<CloseOutcome, StoreError> {
        let done = on_pool!(self, pool => {
            sqlx::query(sql::CLOSE_ORDER)
                .bind(now_ms())
                .bind(order.as_str())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .map_err(q("closing a work order"))?;
        if done == 1 {
            return Ok(CloseOutcome::Closed);
        }
        let state: Option<(String,)> = self
            .row(sql::ORDER_STATE, order.as_str(), "reading a work order")
            .await?;
        Ok(match state {
            Some(_) => CloseOutcome::AlreadyClosed,
            None => CloseOutcome::Unknown,
        })
    }

    /// Whether any work order exists (open or closed).
    pub async fn any_order(&self) -> Result<bool, StoreError> {
        let n: i64 =
            on_pool!(self, pool => sqlx::query_scalar(sql::ANY_ORDER).fetch_one(pool).await)
                .map_err(q("looking for work orders"))?;
        Ok(n > 0)
    }

    /// The order `serial` belongs to: the order listing it explicitly, else the one whose range
    /// holds it (an open one before a closed one).
    pub async fn order_of(&self, serial: &str) -> Result<Option<OrderMatch>, StoreError> {
        let row: Option<OrderRow> = self
            .row(
                sql::ORDER_OF_SERIAL,
                serial,
                "finding the work order of a serial",
            )
            .await?;
        if let Some(row) = row {
            return Ok(Some(row.into_match()?.0));
        }
        let rows: Vec<RangeOrderRow> = self
            .rows(
                sql::RANGES_FOR_SERIAL,
                serial,
                "finding the work order range of a serial",
            )
            .await?;
        let mut found: Option<OrderMatch> = None;
        for row in rows {
            if row.range.range()?.contains(serial) {
                let m = row.order.into_match()?.0;
                let better = found
                    .as_ref()
                    .is_none_or(|f| f.state == OrderState::Closed && m.state == OrderState::Open);
                if better {
                    found = Some(m);
                }
            }
        }
        Ok(found)
    }

    /// One order with its counts.
    pub async fn order(&self, order: &OrderId) -> Result<Option<OrderSummary>, StoreError> {
        let row: Option<OrderRow> = self
            .row(sql::ORDER, order.as_str(), "reading a work order")
            .await?;
        match row {
            Some(row) => Ok(Some(self.summary(row).await?)),
            None => Ok(None),
        }
    }

    /// The newest orders (at most [`MAX_LISTED_ORDERS`]), with their counts.
    pub async fn orders(&self) -> Result<Vec<OrderSummary>, StoreError> {
        self.orders_by(sql::ORDERS, MAX_LISTED_ORDERS).await
    }

    /// The open orders, oldest first (at most `limit`), with their counts (the floor page).
    pub async fn open_orders(&self, limit: u32) -> Result<Vec<OrderSummary>, StoreError> {
        self.orders_by(sql::OPEN_ORDERS, limit).await
    }

    async fn orders_by(&self, sql: &str, limit: u32) -> Result<Vec<OrderSummary>, StoreError> {
        let rows: Vec<OrderRow> = self
            .rows(sql, i64::from(limit), "listing work orders")
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.summary(row).await?);
        }
        Ok(out)
    }

    /// An order row with its ranges and counts.
    async fn summary(&self, row: OrderRow) -> Result<OrderSummary, StoreError> {
        let (m, created_by, created_at_ms, closed_at_ms) = row.into_match()?;
        let id = m.order_id.as_str();
        let ranges: Vec<RangeRow> = self
            .rows(sql::ORDER_RANGES, id, "reading the ranges of a work order")
            .await?;
        let ranges = ranges
            .into_iter()
            .map(|r| r.range())
            .collect::<Result<Vec<_>, _>>()?;
        let explicit: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(sql::ORDER_EXPECTED).bind(id).fetch_one(pool).await
        })
        .map_err(q("counting the serials of a work order"))?;
        let progress: StoreStats = self
            .tally(
                sql::ORDER_PROGRESS,
                Some(id),
                "counting the identities of a work order",
            )
            .await?;
        Ok(OrderSummary {
            expected: count(explicit) + ranges.iter().map(SerialRange::len).sum::<u64>(),
            order_id: m.order_id,
            state: m.state,
            product: m.product,
            ranges,
            deployed: progress.deployed,
            failed: progress.failed,
            in_progress: progress.in_flight,
            in_doubt: progress.in_doubt,
            revoked: progress.revoked,
            created_by,
            created_at_ms,
            closed_at_ms,
        })
    }
}

/// Who holds a serial a batch could not write.
enum Held {
    /// The same upload, at this line (index).
    Repeats(i64),
    /// Another order.
    Order(String),
}

impl Held {
    /// In words; a line is written `{before}{line}{after}` (`line 4`, `serials[3]`).
    fn describe(&self, before: &str, after: &str) -> String {
        match self {
            Held::Repeats(line) => format!("repeats {before}{line}{after}"),
            Held::Order(order) => format!("is already expected by work order {order}"),
        }
    }
}

/// The first row of a batch that was not written (its serial is held): its line, the serial, and
/// who holds it. Only called after a short insert, at most once per upload.
async fn first_taken(
    tx: &mut Tx,
    upload: i64,
    rows: &[(i64, &EndpointName)],
) -> Result<(i64, String, Held), StoreError> {
    for (line, serial) in rows {
        let holder: Option<(String, i64, i64)> = on_tx!(tx, conn => {
            sqlx::query_as(sql::SERIAL_HOLDER)
                .bind(serial.as_str())
                .fetch_optional(conn)
                .await
        })
        .map_err(q("finding who expects a serial"))?;
        match holder {
            Some((_, up, held_line)) if up == upload && held_line == *line => {}
            Some((_, up, held_line)) if up == upload => {
                return Ok((*line, serial.as_str().to_owned(), Held::Repeats(held_line)));
            }
            Some((order, _, _)) => {
                return Ok((*line, serial.as_str().to_owned(), Held::Order(order)));
            }
            None => {}
        }
    }
    Err(StoreError::Corrupt(
        "a batch of serials was not written whole, but every serial is held by it".to_owned(),
    ))
}
