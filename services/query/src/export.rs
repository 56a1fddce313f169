//! `ExportCandles`: a symbol's candles as pages of packed columns (time, open, high, low,
//! close, volume) for notebooks and bulk loads. Decoding six packed arrays is a handful of
//! memory copies where `GetCandles` rows cost a message per bar, which is what makes a year
//! of minute bars cheap to pull into numpy.
//!
//! Pages are unary calls with a keyset token, cut from the candle history the query process
//! holds (see `candles`) or read from the store, one page at a time: memory
//! is bounded by [`MAX_EXPORT_PAGE`] rows whatever the range, and each page is an ordinary
//! idempotent read (retried by the service config, bounded by the call deadline, drained on
//! shutdown like any other).

use tickmesh_proto::v1::{ExportCandlesRequest, ExportCandlesResponse};
use tickmesh_store::{CandleRow, Store};
use tonic::Status;

use crate::candles::HeldCandles;
use crate::{bad_field, interval, paging, store_error, stored_page_query, symbol};

/// Most rows per page, and the page when the request says 0: 48 bytes a row on the wire
/// (one int64 and five doubles), so about 1.5 MiB, well under gRPC's 4 MiB default limit
/// that a plain client applies.
pub const MAX_EXPORT_PAGE: u32 = 32_768;

/// Tells an export token from a `GetCandles` one over the same filters.
const TOKEN_KIND: &[u8] = b"export";

/// The rows per page a request asks for, or the field violation.
fn page_rows(requested: u32) -> Result<i64, Status> {
    match requested {
        0 => Ok(i64::from(MAX_EXPORT_PAGE)),
        n if n > MAX_EXPORT_PAGE => Err(bad_field(
            "page_size",
            format!("at most {MAX_EXPORT_PAGE} rows"),
        )),
        n => Ok(i64::from(n)),
    }
}

/// Rows as columns, in the order given; the token is the caller's to set.
fn columns(rows: &[CandleRow]) -> ExportCandlesResponse {
    let mut page = ExportCandlesResponse {
        time_us: Vec::with_capacity(rows.len()),
        open: Vec::with_capacity(rows.len()),
        high: Vec::with_capacity(rows.len()),
        low: Vec::with_capacity(rows.len()),
        close: Vec::with_capacity(rows.len()),
        volume: Vec::with_capacity(rows.len()),
        next_page_token: String::new(),
    };
    for row in rows {
        page.time_us.push(row.open_time_us);
        page.open.push(row.open);
        page.high.push(row.high);
        page.low.push(row.low);
        page.close.push(row.close);
        page.volume.push(row.volume);
    }
    page
}

/// One page of the export `r` asks for, validated as `GetCandles` validates its request.
pub(crate) async fn page(
    store: &Store,
    held: &HeldCandles,
    r: &ExportCandlesRequest,
) -> Result<ExportCandlesResponse, Status> {
    symbol(&r.symbol, "symbol")?;
    let interval = interval(r.interval)?;
    let limit = page_rows(r.page_size)?;
    if r.start_time_us < 0 {
        return Err(bad_field("start_time_us", "not negative"));
    }
    if r.end_time_us < 0 {
        return Err(bad_field("end_time_us", "not negative"));
    }
    if r.end_time_us != 0 && r.end_time_us <= r.start_time_us {
        return Err(bad_field("end_time_us", "must be after start_time_us"));
    }
    let fingerprint = paging::fingerprint(&[
        TOKEN_KIND,
        r.symbol.as_bytes(),
        &r.interval.to_le_bytes(),
        &r.start_time_us.to_le_bytes(),
        &r.end_time_us.to_le_bytes(),
    ]);
    let query = stored_page_query(
        &r.symbol,
        interval,
        (r.start_time_us, r.end_time_us),
        (&r.page_token, fingerprint),
        false,
        limit,
    )?;
    // From the held history when the page lies inside it (slices copied), else the store.
    let mut response = match held.columns(store, &query).await.map_err(store_error)? {
        Some(response) => response,
        None => columns(&store.candles(&query).await.map_err(store_error)?),
    };
    let rows = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = response.time_us.len() > rows;
    for column in [
        &mut response.open,
        &mut response.high,
        &mut response.low,
        &mut response.close,
        &mut response.volume,
    ] {
        column.truncate(rows);
    }
    response.time_us.truncate(rows);
    if let (true, Some(last)) = (more, response.time_us.last()) {
        response.next_page_token = paging::encode(&[last.to_string()], fingerprint);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn row(open_time_us: i64, close: f64) -> CandleRow {
        CandleRow {
            symbol: "GOOG".into(),
            interval_code: 7,
            open_time_us,
            open: close - 1.0,
            high: close + 2.0,
            low: close - 3.0,
            close,
            volume: 1000.0 + close,
            trade_count: 0,
            closed: true,
        }
    }

    #[test]
    fn rows_become_aligned_columns_in_their_order() {
        let page = columns(&[row(10, 5.0), row(20, 6.5)]);
        assert_eq!(page.time_us, vec![10, 20]);
        assert_eq!(page.open, vec![4.0, 5.5]);
        assert_eq!(page.high, vec![7.0, 8.5]);
        assert_eq!(page.low, vec![2.0, 3.5]);
        assert_eq!(page.close, vec![5.0, 6.5]);
        assert_eq!(page.volume, vec![1005.0, 1006.5]);
        assert!(page.next_page_token.is_empty());
    }

    #[test]
    fn a_full_page_fits_well_inside_the_default_message_limit() {
        let rows: Vec<CandleRow> = (0..i64::from(MAX_EXPORT_PAGE))
            .map(|i| {
                row(
                    1_700_000_000_000_000 + i * 60_000_000,
                    100.0 + i as f64 / 7.0,
                )
            })
            .collect();
        let mut page = columns(&rows);
        page.next_page_token = "ab".repeat(64);
        let bytes = prost::Message::encoded_len(&page);
        assert!(bytes < 2 * 1024 * 1024, "{bytes} bytes");
    }

    #[test]
    fn a_page_size_above_the_maximum_is_a_field_violation() {
        assert_eq!(page_rows(0).unwrap(), i64::from(MAX_EXPORT_PAGE));
        assert_eq!(page_rows(10).unwrap(), 10);
        let status = page_rows(MAX_EXPORT_PAGE + 1).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
