//! The values bound to queries and read from their rows, the same for both dialects:
//! `args![a, b]` builds a query's arguments, [`bind`] binds them, [`get`] reads a column.

use sqlx::Row as _;
use sqlx::any::AnyRow;

/// A value bound to a query parameter.
#[derive(Debug, Clone)]
pub enum Arg {
    Int(i64),
    OptInt(Option<i64>),
    Text(String),
    OptText(Option<String>),
    Bytes(Vec<u8>),
    OptBytes(Option<Vec<u8>>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Self::OptInt(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Self::OptText(v.map(str::to_owned))
    }
}
impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Self {
        Self::OptText(v.clone())
    }
}
impl From<&Vec<u8>> for Arg {
    fn from(v: &Vec<u8>) -> Self {
        Self::Bytes(v.clone())
    }
}
impl From<&Option<Vec<u8>>> for Arg {
    fn from(v: &Option<Vec<u8>>) -> Self {
        Self::OptBytes(v.clone())
    }
}

/// Arguments for a query: `args![a, b, c]`.
macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$($crate::store::values::Arg::from($a)),*] };
}
pub(crate) use args;

/// Binds `args` to a query.
pub fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for a in args {
        q = match a {
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::OptText(v) => q.bind(v),
            Arg::Bytes(v) => q.bind(v),
            Arg::OptBytes(v) => q.bind(v),
        };
    }
    q
}

/// Column `i` of `row`, as `T`.
pub fn get<T>(row: &AnyRow, i: usize) -> std::result::Result<T, sqlx::Error>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get::<T, _>(i)
}
