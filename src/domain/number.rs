//! Numbers as clients write them.

/// An integer as JSON may write it: `2` or `2.0` (JSON Schema's `integer` allows both), not
/// `2.5` and nothing beyond `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeNumber(pub i64);

impl<'de> serde::Deserialize<'de> for WholeNumber {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = WholeNumber;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<WholeNumber, E> {
                i64::try_from(n).map(WholeNumber).map_err(|_| E::custom("the integer is too large"))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<WholeNumber, E> {
                // Within ±2^63, where every f64 with no fraction is an i64.
                if n.fract() == 0.0 && n.abs() < 9.223_372_036_854_775e18 {
                    Ok(WholeNumber(n as i64))
                } else {
                    Err(E::custom(format!("expected an integer, got {n}")))
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_may_be_written_with_a_zero_fraction() {
        let parse = |json: &str| serde_json::from_str::<WholeNumber>(json).map(|n| n.0);
        assert_eq!(parse("2").unwrap(), 2);
        assert_eq!(parse("2.0").unwrap(), 2);
        assert_eq!(parse("-7e0").unwrap(), -7);
        assert!(parse("2.5").is_err());
        assert!(parse("1e300").is_err());
        assert!(parse("18446744073709551615").is_err());
        assert!(parse("\"2\"").is_err());
    }
}
