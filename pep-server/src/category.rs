//! The gateway category: `production` or `development`, the two values of the original tool.

use std::fmt;
use std::str::FromStr;

/// Whether a gateway is a production or a development unit (`category` in the API and in
/// `[defaults]`). Stored and sent as its lowercase name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// A unit that ships to a customer.
    #[default]
    Production,
    /// A unit for development and testing.
    Development,
}

impl Category {
    /// The name used in the API, the config and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Production => "production",
            Category::Development => "development",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A category name that is neither `production` nor `development`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not `production` or `development`")]
pub struct UnknownCategory(pub String);

impl FromStr for Category {
    type Err = UnknownCategory;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "production" => Ok(Category::Production),
            "development" => Ok(Category::Development),
            other => Err(UnknownCategory(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for c in [Category::Production, Category::Development] {
            assert_eq!(c.as_str().parse::<Category>(), Ok(c));
        }
        let e = "prod".parse::<Category>().unwrap_err();
        assert_eq!(e.to_string(), "`prod` is not `production` or `development`");
    }
}
