//! Keyset paging, written once for candles and signals: a page is ordered on a time column
//! (oldest or newest first) and continues strictly after the last key of the previous page;
//! rows sharing a time (signals) are ordered, and broken ties, by the rest of the key ascending.

use diesel::backend::Backend;
use diesel::dsl;
use diesel::expression::BoxableExpression;
use diesel::expression::expression_types::NotSelectable;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};

/// A condition of a boxed query on table `T` for backend `DB`.
pub(crate) type Condition<T, DB> = Box<dyn BoxableExpression<T, DB, SqlType = Bool>>;

/// An ordering term of a boxed query on table `T` for backend `DB`.
pub(crate) type Ordering<T, DB> = Box<dyn BoxableExpression<T, DB, SqlType = NotSelectable>>;

/// Rows after the cursor: time strictly past `after` in page order, or, when `ties` is given
/// (the rest of the key is greater than the cursor's), the same time.
pub(crate) fn after<T, DB, C>(
    time: C,
    after: i64,
    descending: bool,
    ties: Option<Condition<T, DB>>,
) -> Condition<T, DB>
where
    DB: Backend + 'static,
    T: 'static,
    C: Expression<SqlType = BigInt> + ExpressionMethods + Copy + 'static,
    dsl::Gt<C, i64>: BoxableExpression<T, DB, SqlType = Bool>,
    dsl::Lt<C, i64>: BoxableExpression<T, DB, SqlType = Bool>,
    dsl::Eq<C, i64>: BoxableExpression<T, DB, SqlType = Bool>,
    dsl::Or<Condition<T, DB>, dsl::And<Condition<T, DB>, Condition<T, DB>>>:
        BoxableExpression<T, DB, SqlType = Bool>,
{
    let past: Condition<T, DB> = if descending {
        Box::new(time.lt(after))
    } else {
        Box::new(time.gt(after))
    };
    match ties {
        None => past,
        Some(ties) => {
            let same: Condition<T, DB> = Box::new(time.eq(after));
            Box::new(past.or(same.and(ties)))
        }
    }
}

/// The page order on the time column.
pub(crate) fn by_time<T, DB, C>(time: C, descending: bool) -> Ordering<T, DB>
where
    DB: Backend + 'static,
    T: 'static,
    C: ExpressionMethods + Copy + 'static,
    dsl::Desc<C>: BoxableExpression<T, DB, SqlType = NotSelectable>,
    dsl::Asc<C>: BoxableExpression<T, DB, SqlType = NotSelectable>,
{
    if descending {
        Box::new(time.desc())
    } else {
        Box::new(time.asc())
    }
}
