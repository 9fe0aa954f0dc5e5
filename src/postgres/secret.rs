//! Statement parameters that never appear in logs.
//!
//! tokio-postgres logs every statement's parameters with their `Debug` form
//! at debug level (through the `log` crate). Emails, canonical keys, password
//! hashes and token digests are bound wrapped in [`Redacted`], whose `Debug`
//! hides the value, so no log level of the application can reveal them.

use std::error::Error;
use std::fmt;

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// A parameter bound as its inner value, shown as `<redacted>` in `Debug`.
pub(crate) struct Redacted<T>(pub T);

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T: ToSql> ToSql for Redacted<T> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        T::accepts(ty)
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::Redacted;

    #[test]
    fn debug_hides_the_value() {
        let shown = format!("{:?}", Redacted("ada@example.com"));
        assert_eq!(shown, "<redacted>");
    }
}
